"""Tables of a study (pandas): trial counts, the feasible Pareto front, presets, failures, and the
full trial table as CSV / Parquet bytes.
"""

from __future__ import annotations

import io
import shlex
from collections import Counter

import pandas as pd

from nas.util import first_line

from .data import StudyData
from .metrics import metric_view

STATE_ORDER = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
CATEGORY_WORDS = {
    "feasible": "feasible", "infeasible": "infeasible (measured budget)", "preset": "official presets",
    "not_trained": "infeasible before training", "partial": "stopped early (fidelity < 1)",
    "pruned": "pruned", "failed": "failed", "running": "running", "waiting": "waiting",
}


def state_counts(sd: StudyData) -> list[tuple[str, int, list[tuple[str, int]]]]:
    """[(state, count, [(category words, count), ...]), ...] in a fixed order."""
    df = sd.trials
    out = []
    if df.empty:
        return out
    for state in STATE_ORDER + tuple(sorted(set(df["state"]) - set(STATE_ORDER))):
        sub = df[df["state"] == state]
        if sub.empty:
            continue
        cats = Counter(sub["category"])
        parts = [(CATEGORY_WORDS.get(c, c), n) for c, n in cats.most_common()]
        if state == "COMPLETE" and sub["pareto"].any():
            word = "Pareto-optimal" if len(sd.objectives) > 1 else "best"
            parts.insert(0, (word, int(sub["pareto"].sum())))
        out.append((state, len(sub), parts if len(parts) > 1 or state in ("COMPLETE", "PRUNED") else []))
    return out


def export_command(sd: StudyData, number: int) -> str:
    """The command that exports trial `number` as a model directory."""
    if sd.run_dir is not None and sd.storage_url is None:
        return f"overlock-nas export {shlex.quote(str(sd.run_dir))} --trial {number}"
    return (f"overlock-nas export --storage {shlex.quote(sd.storage_label)} "
            f"--study {shlex.quote(sd.study_name)} --trial {number}")


def _columns(sd: StudyData) -> list[str]:
    names = [o.name for o in sd.objectives]
    metrics = names + [m for m in ("accuracy", "flops", "flops_paper", "params", "latency_ms", "memory_mb")
                       if m not in names]
    return [m for m in metrics if m in sd.trials.columns and sd.trials[m].notna().any()]


def _params_text(row: dict, param_names: list[str]) -> str:
    parts = []
    for p in param_names:
        v = row.get(f"params_{p}")
        if v is None or (isinstance(v, float) and v != v):
            continue
        parts.append(f"{p}={v:g}" if isinstance(v, float) else f"{p}={v}")
    return ", ".join(parts)


def trial_table(sd: StudyData, rows: pd.DataFrame, with_export: bool = True) -> pd.DataFrame:
    """Display table of `rows`: raw metric values (the page formats them), config, params, export."""
    cols = _columns(sd)
    out = pd.DataFrame({"trial": rows["number"].astype(int)})
    if "pick" in rows.columns and (rows["pick"] != "").any():
        out["pick"] = rows["pick"].fillna("").to_numpy()
    if "preset" in rows.columns and rows["preset"].notna().any():
        out["preset"] = rows["preset"].fillna("")
    for m in cols:
        out[m] = rows[m]
    if "fidelity" in rows.columns and (rows["fidelity"].fillna(1.0) != 1.0).any():
        out["fidelity"] = rows["fidelity"]
    out["architecture"] = rows["summary"] if "summary" in rows.columns else ""
    recs = rows.to_dict("records")
    if sd.param_names:
        out["params (Optuna)"] = [_params_text(r, sd.param_names) for r in recs]
    if with_export:
        out["export"] = [export_command(sd, int(n)) for n in rows["number"]]
    return out.reset_index(drop=True)


def pareto_rows(sd: StudyData) -> pd.DataFrame:
    """The feasible Pareto-optimal trials, best score first."""
    df = sd.trials
    if df.empty:
        return df
    key = sd.score_metric or (sd.objectives[0].name if sd.objectives else None)
    if len(sd.objectives) < 2:  # single objective: the top 10 feasible trials
        front = df[df["category"] == "feasible"]
    else:
        front = df[df["pareto"]]
    if len(sd.objectives) < 2:
        front = front.sort_values(key, ascending=sd.objective(key).direction != "maximize").head(10) \
            if key and key in front.columns else front.head(10)
    if "pick" in df.columns:  # what `export --top K / --knee` would choose, even off the front
        front = pd.concat([front, df[(df["pick"] != "") & ~df.index.isin(front.index)]])
    if key and key in front.columns:
        front = front.sort_values(key, ascending=sd.objective(key).direction != "maximize")
    return front


def preset_rows(sd: StudyData) -> pd.DataFrame:
    df = sd.trials
    return df[df["category"] == "preset"] if "category" in df.columns else df.iloc[:0]


def failure_table(sd: StudyData) -> pd.DataFrame:
    """Why trials failed or were pruned: reason -> count, state, example trials."""
    df = sd.trials
    bad = df[df["state"].isin(["FAIL", "PRUNED"])]
    if bad.empty:
        return pd.DataFrame(columns=["state", "reason", "trials", "examples"])
    reason = bad["reason"] if "reason" in bad.columns else pd.Series("", index=bad.index)
    # group budget messages ("flops 7.1e9 > budget 6.5e9") by their first word
    key = reason.fillna("(no reason stored)").map(_reason_key)
    rows = []
    for (state, k), sub in bad.groupby([bad["state"], key], sort=False):
        rows.append({"state": state, "reason": k, "trials": len(sub),
                     "examples": ", ".join(str(n) for n in sub["number"].head(8))})
    return pd.DataFrame(rows).sort_values(["trials"], ascending=False).reset_index(drop=True)


def _reason_key(reason: str) -> str:
    """Reasons that differ only in their numbers count as one ("... 0.41 after 2 epochs")."""
    import re

    reason = first_line(reason, empty="(no reason stored)")
    if " > budget " in reason:
        return f"{reason.split()[0]} over budget (not trained)"
    if reason.startswith("successive halving"):
        return reason.split(":")[0] + ": stopped at a rung"
    return re.sub(r"(?<![\w./])\d+(\.\d+)?(e[-+]?\d+)?(?![\w./])", "N", reason)[:160]


def budgets_text(sd: StudyData) -> list[str]:
    out = []
    for name, budget in sd.constraints.items():
        v = metric_view(name, sd.resolution, sd.latency_setting)
        out.append(f"{name} ≤ {format(budget * v.scale, v.fmt)} {v.unit}".strip())
    return out


# ------------------------------------------------------------------------------ downloads
def download_frame(sd: StudyData) -> pd.DataFrame:
    """All trials, one row each, JSON-able columns (datetimes as ISO text)."""
    df = sd.trials.copy()
    for c in ("datetime_start", "datetime_complete"):
        if c in df.columns:
            df[c] = pd.to_datetime(df[c]).dt.strftime("%Y-%m-%dT%H:%M:%S").where(df[c].notna(), None)
    return df


def csv_bytes(sd: StudyData) -> bytes:
    return download_frame(sd).to_csv(index=False).encode()


def parquet_bytes(sd: StudyData) -> bytes:
    df = download_frame(sd)
    # mixed-type object columns (user_attrs) are stored as text so pyarrow accepts them
    for c in df.columns:
        if df[c].dtype == object:
            kinds = {type(v) for v in df[c].dropna()}
            if len(kinds) > 1 or (kinds and kinds - {str, bool, int, float}):
                df[c] = df[c].map(lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v))
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()
