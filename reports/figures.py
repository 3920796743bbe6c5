"""Plotly figures of a study: Pareto fronts, hypervolume history, parallel coordinates,
parameter importances, error/score EDFs per design dimension, per-stage latency.

Each builder takes a `StudyData` and returns a `Figure` (a plotly figure plus the caption the page
prints under it), or a `Note` saying why it was skipped. Nothing here touches storage or HTML.
Pareto points are never down-sampled; every trial with the coordinates is drawn.
"""

from __future__ import annotations

import itertools
import json
import math
import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from nas.util import one_line

from .data import Objective, StudyData
from .metrics import MetricView, metric_view
from .pareto import hypervolume_history, pareto_mask

MIN_IMPORTANCE_TRIALS = 20
MAX_IMPORTANCE_TRIALS = 2000
WEBGL_ABOVE = 5000  # points per trace beyond which scatter plots switch to WebGL
COMPACT_HOVER_ABOVE = 5000  # trials beyond which hover texts of dominated trials omit the architecture

FONT = dict(family="Inter, Segoe UI, Helvetica, Arial, sans-serif", size=13, color="#222")
STYLE = {  # category -> legend name, marker
    "feasible": ("feasible", dict(color="#4C78A8", size=7, opacity=0.55, symbol="circle")),
    "pareto": ("Pareto-optimal (feasible)", dict(color="#F58518", size=11, symbol="circle",
                                                line=dict(color="#222", width=1.2))),
    "infeasible": ("infeasible (broke a measured budget)",
                   dict(color="#8C8C8C", size=7, symbol="circle-open", line=dict(width=1.4))),
    "not_trained": ("infeasible before training (not trained)",
                    dict(color="#A0A0A0", size=9, symbol="line-ns-open", line=dict(width=1.4))),
    "partial": ("stopped early (fidelity < 1)",
                dict(color="#B279A2", size=7, symbol="diamond-open", line=dict(width=1.4))),
    "pruned": ("pruned", dict(color="#B279A2", size=7, symbol="square-open", line=dict(width=1.4))),
    "failed": ("failed", dict(color="#E45756", size=8, symbol="x-thin-open", line=dict(width=2))),
    "running": ("running", dict(color="#54A24B", size=8, symbol="hourglass")),
    "preset": ("official preset (same setting)",
               dict(color="#111", size=16, symbol="star", line=dict(color="#fff", width=1))),
}
DRAW_ORDER = ("not_trained", "failed", "running", "pruned", "partial", "infeasible", "feasible",
              "pareto", "preset")
PRESET_SHORT = {"overlock_xt": "XT", "overlock_t": "T", "overlock_s": "S", "overlock_b": "B"}


@dataclass
class Figure:
    key: str
    title: str
    figure: go.Figure
    caption: str = ""
    height: int = 520


@dataclass
class Note:
    key: str
    title: str
    text: str


# ------------------------------------------------------------------------------------ helpers
_TEMPLATE = None


def _template():
    global _TEMPLATE
    if _TEMPLATE is None:  # validated once per process, not once per figure
        import plotly.io as pio

        _TEMPLATE = pio.templates["plotly_white"]
    return _TEMPLATE


def _layout(fig: go.Figure, title: str | None = None, height: int = 520, **kw) -> go.Figure:
    fig.update_layout(
        template=_template(), font=FONT, height=height, title=None,
        margin=dict(l=70, r=20, t=30 if not title else 50, b=60), hoverlabel=dict(font_size=12),
        modebar=dict(orientation="v"),  # on the right edge, clear of the legend row on top
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0, font_size=12),
        **kw)
    if title:
        fig.update_layout(title=dict(text=title, x=0.01, font_size=15))
    return fig


def views(sd: StudyData) -> dict[str, MetricView]:
    names = {o.name for o in sd.objectives} | {"flops", "flops_paper", "params", "latency_ms",
                                              "memory_mb", "accuracy"}
    return {n: metric_view(n, sd.resolution, sd.latency_setting, sd.dataset, sd.accuracy_from) for n in names}


def hover_texts(sd: StudyData) -> pd.Series:
    """One hover text per trial: number, category, architecture summary, metrics, reason."""
    df = sd.trials
    v = views(sd)
    shown = [o.name for o in sd.objectives] + [m for m in ("flops", "params", "latency_ms", "memory_mb")
                                              if m not in {o.name for o in sd.objectives}]
    shown = [m for m in shown if m in df.columns]
    out = []
    # past this many trials only the front and presets carry the architecture lines (page size)
    compact = len(df) > COMPACT_HOVER_ABOVE
    for row in df.to_dict("records"):
        cat = "Pareto-optimal" if row.get("pareto") else STYLE.get(row["category"], (row["category"],))[0]
        head = f"<b>trial {row['number']}</b> · {cat}"
        if isinstance(row.get("preset"), str):
            head = f"<b>{row['preset']}</b> (trial {row['number']}) · official preset"
        lines = [head]
        summary = row.get("summary")
        if isinstance(summary, str) and not (compact and not row.get("pareto") and row["category"] != "preset"):
            lines += [p.strip() for p in summary.split("|")]
        metrics = [f"{v[m].short} {v[m].show(row[m])}" for m in shown if row.get(m) is not None
                   and not (isinstance(row[m], float) and math.isnan(row[m]))]
        if metrics:
            lines.append(" · ".join(metrics))
        fid = row.get("fidelity")
        if isinstance(fid, float) and not math.isnan(fid) and fid < 1:
            lines.append(f"fidelity {fid:g}")
        reason = row.get("reason")
        if isinstance(reason, str) and row["category"] not in ("feasible", "preset"):
            lines.append(reason[:120])
        out.append("<br>".join(lines))
    return pd.Series(out, index=df.index)


def _axis_pair(sd: StudyData, a: str, b: str) -> tuple[str, str]:
    """(x, y): a cost on x and a score on y when the pair mixes directions."""
    oa, ob = sd.objective(a), sd.objective(b)
    if oa.direction == "maximize" and ob.direction == "minimize":
        return b, a
    return a, b


def _scatter(n: int):
    return go.Scattergl if n > WEBGL_ABOVE else go.Scatter


def _front_line(x: np.ndarray, y: np.ndarray, ox: Objective, oy: Objective):
    """The 2-D non-dominated staircase of (x, y) in display units."""
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if not len(x):
        return None
    mask = pareto_mask(np.c_[x * ox.sign, y * oy.sign])
    fx, fy = x[mask], y[mask]
    order = np.argsort(fx * ox.sign)
    return fx[order], fy[order]


def _budget_shapes(fig: go.Figure, sd: StudyData, metric: str, view: MetricView, axis: str):
    budget = sd.constraints.get(metric)
    if budget is None:
        return
    value = budget * view.scale
    label = f"budget: {metric} ≤ {format(value, view.fmt)} {view.unit}".rstrip()
    if axis == "x":
        fig.add_vline(x=value, line=dict(color="#C0392B", dash="dash", width=1.6),
                      annotation=dict(text=label, font=dict(color="#C0392B", size=11)),
                      annotation_position="top left")
    else:
        fig.add_hline(y=value, line=dict(color="#C0392B", dash="dash", width=1.6),
                      annotation=dict(text=label, font=dict(color="#C0392B", size=11)),
                      annotation_position="top right")


# ------------------------------------------------------------------------------- Pareto views
def pareto_pairs(sd: StudyData) -> list[tuple[str, str]]:
    """Objective pairs; a single objective is paired with each cost metric the trials carry."""
    names = [o.name for o in sd.objectives]
    if len(names) >= 2:
        return [_axis_pair(sd, a, b) for a, b in itertools.combinations(names, 2)]
    df = sd.trials
    others = [m for m in ("flops", "latency_ms", "params") if m in df.columns and m not in names
              and df[m].notna().any()]
    return [_axis_pair(sd, names[0], m) for m in others] if names else []


def pareto_figure(sd: StudyData, x: str, y: str, hover: pd.Series) -> Figure:
    df = sd.trials
    v = views(sd)
    vx, vy = v.get(x) or metric_view(x), v.get(y) or metric_view(y)
    ox, oy = sd.objective(x), sd.objective(y)
    xs = df[x].to_numpy(dtype=float) * vx.scale
    ys = df[y].to_numpy(dtype=float) * vy.scale
    has_x, has_y = ~np.isnan(xs), ~np.isnan(ys)
    fig = go.Figure()
    finite_y = ys[has_x & has_y]
    y_rug = None
    if len(finite_y):
        lo, hi = float(np.min(finite_y)), float(np.max(finite_y))
        span = (hi - lo) or abs(hi) or 1.0
        y_rug = lo - 0.06 * span
    single = len(sd.objectives) < 2
    for cat in DRAW_ORDER:
        if cat == "pareto":
            sel = df["pareto"].to_numpy(dtype=bool) & has_x & has_y
        elif cat == "feasible":
            sel = (df["category"] == "feasible").to_numpy() & ~df["pareto"].to_numpy(dtype=bool) & has_x & has_y
        else:
            sel = (df["category"] == cat).to_numpy() & has_x
        if not sel.any():
            continue
        name, marker = STYLE[cat]
        if single and cat == "pareto":
            name = "best feasible trial"
        yy = ys[sel].copy()
        rug = np.isnan(yy)
        if rug.all() and y_rug is None:
            continue
        if rug.any():
            yy[rug] = y_rug
            if rug.all():
                name += f" — no {vy.short}: drawn along the bottom"
        kind = _scatter(int(sel.sum()))
        trace = dict(x=xs[sel], y=yy, mode="markers", name=f"{name} ({int(sel.sum())})", marker=marker,
                     hovertext=hover[sel].to_numpy(), hovertemplate="%{hovertext}<extra></extra>")
        if cat == "preset":  # labelled reference markers
            trace.update(mode="markers+text", textposition="top center", textfont=dict(size=13, color="#111"),
                         text=[PRESET_SHORT.get(p, p) for p in df.loc[sel, "preset"]])
            kind = go.Scatter
        fig.add_trace(kind(**trace))
    feasible = (df["category"] == "feasible").to_numpy()
    line = _front_line(xs[feasible], ys[feasible], ox, oy)
    if line is not None and len(line[0]) > 0:
        fig.add_trace(go.Scatter(x=line[0], y=line[1], mode="lines", line=dict(color="#F58518", width=2,
                                 shape="hv"), name="2-D front of this pair", hoverinfo="skip",
                                 opacity=0.8))
        # the line under the points
        fig.data = (fig.data[-1],) + fig.data[:-1]
    _budget_shapes(fig, sd, x, vx, "x")
    _budget_shapes(fig, sd, y, vy, "y")
    arrow = {"maximize": "↑ better", "minimize": "↓ better"}
    fig.update_xaxes(title_text=f"{vx.label}  ({'← better' if ox.direction == 'minimize' else '→ better'})",
                     zeroline=False)
    # a long y title (an accuracy names its data set) clips at 560 px: wrap it into short lines
    y_title = "<br>".join(textwrap.wrap(f"{vy.label}  ({arrow[oy.direction]})", 55))
    fig.update_yaxes(title_text=y_title, zeroline=False)
    _layout(fig, height=560)
    n_pareto = int(df["pareto"].sum())
    drawn = (f"Every trial with both values is drawn ({int((has_x & has_y).sum())} points; none "
             "down-sampled). ")
    if single:
        front = (f"A single-objective study: {vx.short} is not optimised, it is shown as a trade-off axis. "
                 + drawn + "Orange marker: the best feasible trial; orange line: the feasible trials no other "
                 "beats on both axes. ")
    elif n_pareto == 0:
        front = drawn + "No feasible complete trial yet, so no Pareto front. "
    else:
        front = (drawn + f"Orange: the {n_pareto} feasible Pareto-optimal trials of the whole study"
                 + (" (all objectives, so some sit behind the 2-D front of this pair)"
                    if len(sd.objectives) > 2 else "") + "; orange line: the 2-D front of this pair. ")
    caption = (front + f"Trials without a {vy.short} value (never trained, failed, running) are drawn as ticks "
               "along the bottom. Dashed red: budgets. Hover a point for its architecture and metrics.")
    title = f"{vy.short} vs {vx.short}"
    return Figure(f"pareto-{x}-{y}", title, fig, caption, 560)


def pareto_3d(sd: StudyData, hover: pd.Series) -> Figure | None:
    if len(sd.objectives) < 3:
        return None
    df = sd.trials
    names = [o.name for o in sd.objectives]
    score = [n for n in names if sd.objective(n).direction == "maximize"][:1]
    costs = [n for n in names if n not in score]
    x, y, z = (costs + score)[:3] if score else names[:3]
    v = views(sd)
    fig = go.Figure()
    for cat in ("infeasible", "feasible", "pareto", "preset"):  # full-fidelity values only
        if cat == "pareto":
            sel = df["pareto"].to_numpy(dtype=bool)
        elif cat == "feasible":
            sel = (df["category"] == "feasible").to_numpy() & ~df["pareto"].to_numpy(dtype=bool)
        else:
            sel = (df["category"] == cat).to_numpy()
        sel = sel & df[[x, y, z]].notna().all(axis=1).to_numpy()
        if not sel.any():
            continue
        name, marker = STYLE[cat]
        # Scatter3d knows fewer symbols and no marker outlines
        marker = {k: val for k, val in marker.items() if k != "line"}
        marker["size"] = max(3, marker.get("size", 6) - 3)
        marker["symbol"] = {"circle-open": "circle-open", "diamond-open": "diamond-open",
                            "star": "diamond"}.get(marker["symbol"], "circle")
        labels = dict(mode="markers+text", text=[PRESET_SHORT.get(p, p) for p in df.loc[sel, "preset"]],
                      textposition="top center") if cat == "preset" else dict(mode="markers")
        fig.add_trace(go.Scatter3d(
            x=df.loc[sel, x] * v[x].scale, y=df.loc[sel, y] * v[y].scale, z=df.loc[sel, z] * v[z].scale,
            name=f"{name} ({int(sel.sum())})", marker=marker,
            hovertext=hover[sel].to_numpy(), hovertemplate="%{hovertext}<extra></extra>", **labels))
    # look across the (usually correlated) cost axes, not along their diagonal
    def wrap(label: str) -> str:  # long titles clip in 3-D: break them at the first "("
        return label.replace(" (", "<br>(", 1)

    fig.update_layout(scene=dict(xaxis_title=wrap(v[x].label), yaxis_title=wrap(v[y].label),
                                 zaxis_title=wrap(v[z].label), aspectmode="cube",
                                 camera=dict(eye=dict(x=1.95, y=-1.45, z=0.75), center=dict(x=0, y=0, z=-0.12)),
                                 domain=dict(x=[0, 1], y=[0, 1])))
    _layout(fig, height=700)
    fig.update_layout(margin=dict(l=0, r=0, t=40, b=0))
    caption = (f"All three objectives: x = {v[x].label}; y = {v[y].label}; z = {v[z].label}. "
               "Drag to rotate.")
    return Figure("pareto-3d", "Pareto front in 3-D", fig, caption, 700)


# ------------------------------------------------------------------------------- hypervolume
REJECTED_WINDOW = 25   # draws in the moving share of rejected draws


def _reason_counts(value) -> dict:
    """A trial's `rejected_draws` ({reason: count}; a JSON string in the frame) as a dict."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, (int, float)) and v > 0}


def rejected_draws(sd: StudyData) -> pd.DataFrame:
    """Per trial (by number): the draws made up to it and the draws rejected for a budget.

    A draw is a config the search proposed. Studies with the proposer record on each trial the
    draws rejected before it (user attr `rejected_draws`, {reason: count}); in older studies a
    config over a budget became a PRUNED `infeasible` trial: one rejected draw, for the first
    budget (in the study's order) it breaks. Columns: number, draws and rejected (cumulative),
    reasons (this trial's {reason: count}).
    """
    df = sd.trials.sort_values("number")
    budgets = [f"constraint_{b}" for b in sd.constraints if f"constraint_{b}" in df.columns]
    rows, draws, rejected = [], 0, 0
    for r in df.to_dict("records"):
        reasons = _reason_counts(r.get("rejected_draws"))
        draws += sum(reasons.values()) + 1          # the draws rejected before it, then its own
        if r.get("infeasible") is True and r.get("state") == "PRUNED":
            broken = [c[len("constraint_"):] for c in budgets if (_num(r.get(c)) or 0) > 0]
            reason = _REASON_OF_BUDGET.get(broken[0], broken[0]) if broken else "over budget"
            reasons[reason] = reasons.get(reason, 0) + 1
        rejected += sum(reasons.values())
        rows.append({"number": int(r["number"]), "draws": draws, "rejected": rejected, "reasons": reasons})
    return pd.DataFrame(rows, columns=["number", "draws", "rejected", "reasons"])


# budget -> reason, as the proposer names them (nas.search.proposals.REASONS)
_REASON_OF_BUDGET = {"flops_paper": "flops", "memory_mb": "memory"}


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _rejected_traces(sd: StudyData) -> tuple[list[go.Scatter], str]:
    """The lower panel (share of draws rejected, overall and over the last draws) and its caption."""
    rd = rejected_draws(sd)
    if rd.empty:
        return [], ""
    share = rd["rejected"] / rd["draws"].clip(lower=1)
    # over the last REJECTED_WINDOW draws (or fewer at the start)
    window = []
    for i in range(len(rd)):
        lo = np.searchsorted(rd["draws"].to_numpy(), rd["draws"].iloc[i] - REJECTED_WINDOW, side="right")
        d0, r0 = (rd["draws"].iloc[lo - 1], rd["rejected"].iloc[lo - 1]) if lo > 0 else (0, 0)
        window.append((rd["rejected"].iloc[i] - r0) / max(1, rd["draws"].iloc[i] - d0))
    totals: dict[str, float] = {}
    for reasons in rd["reasons"]:
        for k, v in reasons.items():
            totals[k] = totals.get(k, 0) + v
    traces = [
        go.Scatter(x=rd["number"], y=share, mode="lines", name="rejected draws, all so far",
                   line=dict(color="#E45756", width=2, shape="hv"),
                   hovertemplate="up to trial %{x}: %{y:.1%} of draws rejected<extra></extra>"),
        go.Scatter(x=rd["number"], y=window, mode="lines", name=f"rejected, last {REJECTED_WINDOW} draws",
                   line=dict(color="#E45756", width=1, dash="dot", shape="hv"),
                   hovertemplate="trial %{x}: %{y:.1%} of the last draws rejected<extra></extra>")]
    total = int(rd["draws"].iloc[-1])
    by_reason = ", ".join(f"{k} {v:.0f}" for k, v in sorted(totals.items(), key=lambda kv: -kv[1]))
    caption = (f"Lower panel: share of the search's draws rejected for a budget, {int(rd['rejected'].iloc[-1])} "
               f"of {total} draws ({rd['rejected'].iloc[-1] / max(1, total):.1%})"
               + (f"; by budget: {by_reason}" if by_reason else "") + ". A draw is a config the sampler "
               "proposed: one rejected before a trial was created (recorded on the trial that followed, "
               "`rejected_draws`), or, in studies written before that, a trial PRUNED over a budget "
               "before training.")
    return traces, caption


def hypervolume_figure(sd: StudyData) -> Figure | Note:
    key, title = "hypervolume", "Hypervolume history"
    df = sd.trials
    names = [o.name for o in sd.objectives]
    if len(names) < 2:
        return _best_so_far(sd)
    if len(names) > 3:
        return Note(key, title, f"Hypervolume is computed exactly for 2-3 objectives; this study has "
                                f"{len(names)}.")
    feas = df[(df["category"] == "feasible")].dropna(subset=names)
    if len(feas) < 2:
        return Note(key, title, "Fewer than two feasible complete trials: no hypervolume yet.")
    trainings = _new_trainings(df)
    order = feas.assign(_x=trainings.loc[feas.index] if trainings is not None else feas["number"])
    order = order.sort_values(["_x", "number"])
    signs = np.array([o.sign for o in sd.objectives])
    y = order[names].to_numpy(dtype=float) * signs
    lo, hi = y.min(axis=0), y.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    norm = (y - lo) / span
    ref = np.full(len(names), 1.1)
    hv = hypervolume_history(norm, ref)
    v = views(sd)
    ref_raw = (lo + 1.1 * span) * signs
    ref_text = ", ".join(f"{v[n].short} {format(r * v[n].scale, v[n].fmt)}" for n, r in zip(names, ref_raw))
    # the value after every trial (it changes only at feasible complete ones), up to the last trial;
    # with results reused from earlier studies, after every new training (those results at 0)
    numbers = np.arange(int(trainings.max()) + 1) if trainings is not None else df["number"].sort_values().to_numpy()
    at = np.searchsorted(order["_x"].to_numpy(), numbers, side="right") - 1
    curve = np.where(at >= 0, hv[np.maximum(at, 0)], 0.0)
    rejected, rejected_caption = _rejected_traces(sd)
    fig = _with_lower_panel(bool(rejected))
    fig.add_trace(go.Scatter(x=numbers, y=curve, mode="lines", line=dict(shape="hv", width=2, color="#4C78A8"),
                             name="hypervolume", hovertemplate=("after %{x} new trainings" if trainings is not None
                                                                else "after trial %{x}") + ": %{y:.4f}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=order["_x"], y=hv, mode="markers", marker=dict(size=4, color="#4C78A8"),
                             name="feasible complete trial", showlegend=False,
                             hovertemplate="trial %{x}: %{y:.4f}<extra></extra>"), row=1, col=1)
    for trace in rejected:
        fig.add_trace(trace, row=2, col=1)
    fig.update_yaxes(title_text=f"hypervolume (normalised; max {1.1 ** len(names):.3f})", rangemode="tozero",
                     row=1, col=1)
    if rejected:
        fig.update_yaxes(title_text="draws rejected", tickformat=".0%", range=[0, 1], row=2, col=1)
    fig.update_xaxes(title_text="new trainings" if trainings is not None else "trial number",
                     row=2 if rejected else 1, col=1)
    height = 520 if rejected else 380
    _layout(fig, height=height)
    caption = (f"Exact {len(names)}-D hypervolume of the feasible Pareto front of the trials numbered up to "
               "each trial (presets excluded): a curve that has stopped rising says the study has converged "
               "for its budget of trials. Objectives in minimisation form, each scaled to [0, 1] by the best "
               "and worst feasible complete trial; a fixed reference point 1.1 in every objective, i.e. the "
               f"worst value plus 10% of the range: {ref_text}. The exact front of the space is not known "
               "(accuracy is only known for trained configs), so this is not a share of it. "
               + (f"The x axis counts new trainings only: the {int(df['reused_from_study'].notna().sum())} "
                  "results reused from earlier studies stand at 0, repeats of an architecture are not "
                  "trainings. " if trainings is not None else "")
               + rejected_caption)
    return Figure(key, title, fig, caption, height)


def _new_trainings(df: pd.DataFrame) -> pd.Series | None:
    """Per trial, the new trainings up to and including it (trial-number order), 0 for results
    reused from earlier studies; None when the study reused none (the x axis stays the trial
    number)."""
    if "reused_from_study" not in df.columns or df["reused_from_study"].isna().all():
        return None
    reused = df["reused_from_study"].notna()
    if "reused_from" in df.columns:
        reused |= df["reused_from"].notna()
    trained = ~reused & ~df["category"].isin(["not_trained", "running", "waiting", "preset"])
    order = df.sort_values("number")
    counted = trained.loc[order.index].cumsum()
    out = counted.where(~df["reused_from_study"].notna().loc[order.index], 0)
    return out.reindex(df.index).astype(int)


def _with_lower_panel(lower: bool) -> go.Figure:
    from plotly.subplots import make_subplots

    if not lower:
        return make_subplots(rows=1, cols=1)
    return make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.06)


def _best_so_far(sd: StudyData) -> Figure | Note:
    key, title = "best-so-far", "Best feasible value so far"
    if not sd.objectives:
        return Note(key, title, "The study has no objectives.")
    o = sd.objectives[0]
    df = sd.trials
    feas = df[df["category"] == "feasible"].dropna(subset=[o.name]).sort_values("number")
    if feas.empty:
        return Note(key, title, "No feasible complete trial yet.")
    v = views(sd).get(o.name) or metric_view(o.name)
    vals = feas[o.name].to_numpy(dtype=float) * v.scale
    best = np.maximum.accumulate(vals) if o.direction == "maximize" else np.minimum.accumulate(vals)
    fig = go.Figure([
        go.Scatter(x=feas["number"], y=vals, mode="markers", name="feasible trial",
                   marker=dict(color="#4C78A8", size=6, opacity=0.6)),
        go.Scatter(x=feas["number"], y=best, mode="lines", name="best so far",
                   line=dict(color="#F58518", width=2, shape="hv"))])
    fig.update_xaxes(title_text="trial number")
    fig.update_yaxes(title_text=v.label)
    _layout(fig, height=380)
    return Figure(key, title, fig, "A single-objective study: the best feasible value after each trial.", 380)


# ------------------------------------------------------------------------- design dimensions
def design_dimensions(sd: StudyData, max_levels: int = 8) -> dict[str, pd.Series]:
    """Label -> per-trial level (ordered categorical) for the EDF and parallel-coordinate views.

    The Optuna params, then OverLoCK config quantities the params do not already give: region
    count, the Overview/Focus depth split, and any other config field that varies. Numeric
    dimensions with more than `max_levels` values are cut into quantile bins.
    """
    df = sd.trials
    dims: dict[str, pd.Series] = {}
    codes: list[np.ndarray] = []  # factorized raw values of each kept dimension (-1: missing)

    def add(label, series):
        if series.dropna().nunique() < 2:
            return
        mine = pd.factorize(series.astype("string"))[0]
        for other in codes:  # the same partition as an existing dimension: skip
            both = (other >= 0) & (mine >= 0)
            if both.any() and _same_partition(other[both], mine[both]):
                return
        codes.append(mine)
        dims[label] = _levels(series, max_levels)

    cfg = lambda k: df[f"config_{k}"] if f"config_{k}" in df.columns else None  # noqa: E731
    if cfg("region_count") is not None:
        add("region count R", pd.to_numeric(cfg("region_count"), errors="coerce"))
    if cfg("overview_depth") is not None and cfg("focus_depths") is not None:
        ov = pd.to_numeric(cfg("overview_depth"), errors="coerce")
        fo = cfg("focus_depths").map(lambda t: sum(int(x) for x in str(t).split("-")) if isinstance(t, str) else np.nan)
        add("Overview / Focus depth split", pd.Series(
            [f"{int(a)} / {int(b)}" if a == a and b == b else np.nan for a, b in zip(ov, fo)],
            index=df.index))
        add("Overview share of Overview+Focus depth", ov / (ov + fo))
    for name in sd.param_names:
        col = f"params_{name}"
        if col in df.columns:
            add(name, df[col])
    for field in sd.config_fields:
        if field in ("resolution", "num_classes", "in_chans", "aux_head", "stem_width", "context_dim"):
            continue
        if f"config_{field}" in df.columns:
            add(f"config {field}", df[f"config_{field}"])
    return dims


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings group the rows identically (a bijection between their labels)."""
    pairs = np.unique(np.c_[a, b], axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def _levels(s: pd.Series, max_levels: int) -> pd.Series:
    num = pd.to_numeric(s, errors="coerce")
    numeric = num.notna().sum() == s.notna().sum()
    if numeric:
        uniq = np.sort(num.dropna().unique())
        if len(uniq) > max_levels:
            binned = pd.qcut(num, q=min(5, max_levels), duplicates="drop")
            labels = [f"{iv.left:.3g}–{iv.right:.3g}" for iv in binned.cat.categories]
            return binned.cat.rename_categories(labels)
        labels = [_fmt_level(u) for u in uniq]
        text = num.map(lambda u: _fmt_level(u) if u == u else None)
        return pd.Series(pd.Categorical(text, categories=labels, ordered=True), index=s.index)
    text = s.astype("string")
    counts = text.value_counts()
    keep = list(counts.index[:max_levels])
    if len(counts) > max_levels:
        text = text.where(text.isin(keep), "other")
        keep.append("other")
    order = sorted(keep, key=lambda k: (k == "other", _natural(k)))
    return pd.Series(pd.Categorical(text, categories=order, ordered=True), index=s.index)


def _fmt_level(u) -> str:
    return str(int(u)) if float(u).is_integer() else f"{u:g}"


def _natural(text: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


def _quality(sd: StudyData):
    """(column, display transform, axis label, 'lower is better') of the EDF quantity."""
    m = sd.score_metric
    if m is None:
        return None
    if m == "accuracy":
        return m, (lambda a: 100.0 * (1.0 - a)), "top-1 error (%, proxy training) = 100 − accuracy", True
    o = sd.objective(m)
    v = metric_view(m)
    return m, (lambda a: a * v.scale), f"{v.label}", o.direction == "minimize"


MIN_EDF_TRIALS = 5


@dataclass
class Sample:
    """The trials a statistic (EDFs, importances) is drawn over, and the words that say which."""
    trials: pd.DataFrame
    words: str            # "the 12 complete (full-fidelity) trials" / "... after 2 epochs ..."


def complete_sample(sd: StudyData, columns: list[str]) -> Sample:
    base = sd.trials[sd.trials["category"].isin(["feasible", "infeasible"])].dropna(subset=columns)
    return Sample(base, f"the {len(base)} complete (full-fidelity) trials, feasible or not")


def first_rung_sample(sd: StudyData, columns: list[str]) -> Sample | None:
    """Every trained trial at the first successive-halving rung, which all of them reached: the
    score column holds its score there (`rung_scores`), so complete and stopped trials are compared
    at one fidelity. None when the study has no rungs or a trained trial lacks that rung."""
    df, col = sd.trials, sd.score_metric
    if col != "accuracy" or "rung_scores" not in df.columns:
        return None
    trained = df[df["category"].isin(["feasible", "infeasible", "partial", "pruned"])]
    rungs = [_rung_dict(v) for v in trained["rung_scores"]]
    if not len(trained) or not all(rungs):
        return None
    first = min(min(r) for r in rungs)
    if not all(first in r for r in rungs):
        return None
    base = trained.assign(**{col: [r[first] for r in rungs]}).dropna(subset=columns)
    stopped = int((~base["category"].isin(["feasible", "infeasible"])).sum())
    return Sample(base, f"all {len(base)} trained trials at the first successive-halving rung "
                        f"(their accuracy after {first:g} epochs; {stopped} of them were stopped there): "
                        "one fidelity for every trial")


def _rung_dict(value) -> dict[float, float]:
    try:
        rungs = json.loads(value) if isinstance(value, str) else value
        return {float(k): float(v) for k, v in (rungs or {}).items()}
    except (TypeError, ValueError):
        return {}


def statistic_sample(sd: StudyData, columns: list[str], needed: int) -> Sample:
    """The complete trials; when fewer than `needed`, every trained trial at the first rung if
    that holds more of them (the caption says which was drawn)."""
    complete = complete_sample(sd, columns)
    if len(complete.trials) >= needed:
        return complete
    rung = first_rung_sample(sd, columns)
    return rung if rung is not None and len(rung.trials) > len(complete.trials) else complete


def edf_figure(sd: StudyData) -> Figure | Note:
    key, title = "edf", "Error EDF per design dimension"
    q = _quality(sd)
    df = sd.trials
    if q is None:
        return Note(key, title, "No accuracy or score objective: nothing to draw an EDF of.")
    col, transform, label, lower_better = q
    if col != "accuracy":
        title = f"{col} EDF per design dimension"
    sample = statistic_sample(sd, [col], MIN_EDF_TRIALS)
    base = sample.trials
    if len(base) < MIN_EDF_TRIALS:
        return Note(key, title, f"EDFs need at least {MIN_EDF_TRIALS} complete trials; this study has {len(base)}.")
    dims = design_dimensions(sd)
    if not dims:
        return Note(key, title, "No design dimension varies across the trials.")
    palette = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D",
               "#EECA3B"]
    fig = go.Figure()
    values = transform(base[col].to_numpy(dtype=float))
    allx = np.sort(values)
    fig.add_trace(go.Scatter(x=allx, y=np.arange(1, len(allx) + 1) / len(allx), mode="lines",
                             name=f"all ({len(allx)})", line=dict(color="#999", dash="dot", width=2, shape="hv"),
                             hovertemplate="%{x:.3g}: %{y:.0%}<extra>all</extra>"))
    groups = []
    for i, (dim, levels) in enumerate(dims.items()):
        lv = levels.loc[base.index]
        traces = []
        for j, level in enumerate(lv.cat.categories if hasattr(lv, "cat") else sorted(lv.dropna().unique())):
            sel = (lv == level).to_numpy()
            if not sel.any():
                continue
            x = np.sort(values[sel])
            n = len(x)
            fig.add_trace(go.Scatter(
                x=x, y=np.arange(1, n + 1) / n, mode="lines", visible=(i == 0),
                name=f"{level} (n={n})", line=dict(color=palette[j % len(palette)], width=2.2, shape="hv"),
                hovertemplate=f"{dim} = {level}<br>%{{x:.3g}}: %{{y:.0%}} of n={n}<extra></extra>"))
            traces.append(len(fig.data) - 1)
        groups.append((dim, traces))
    buttons = []
    for dim, traces in groups:
        visible = [True] + [False] * (len(fig.data) - 1)
        for t in traces:
            visible[t] = True
        buttons.append(dict(label=dim, method="update", args=[{"visible": visible},
                                                               {"legend.title.text": dim}]))
    fig.update_layout(
        updatemenus=[dict(type="dropdown", buttons=buttons, x=0, xanchor="left", y=1.22, yanchor="top",
                          showactive=True, bgcolor="#fff", bordercolor="#bbb", font=dict(size=13))],
        legend=dict(title=dict(text=groups[0][0]), orientation="v", x=1.01, y=1, xanchor="left",
                    yanchor="top"))
    fig.update_xaxes(title_text=label)
    fig.update_yaxes(title_text="fraction of trials with a value ≤ x", range=[0, 1.02], tickformat=".0%")
    _layout(fig, height=520)
    fig.update_layout(legend=dict(orientation="v", x=1.01, y=1, xanchor="left", yanchor="top"),
                      margin=dict(t=90, r=10))
    better = "up and to the left" if lower_better else "down and to the right"
    caption = (f"RegNet-style EDFs (Radosavovic et al., “Designing Network Design Spaces”): for each value "
               f"of the chosen dimension, the empirical CDF of {label.split(' (')[0]} over {sample.words}. "
               f"A curve further {better} means that "
               "choice gives better networks more often. Pick the dimension from the menu.")
    return Figure(key, title, fig, caption, 520)


# --------------------------------------------------------------------- parallel coordinates
def parallel_figure(sd: StudyData) -> Figure | Note:
    key, title = "parallel", "Parallel coordinates of the design dimensions"
    df = sd.trials
    names = [o.name for o in sd.objectives if o.name in df.columns]
    base = df[df["category"].isin(["feasible", "infeasible"])].dropna(subset=names)
    if len(base) < 2 or not names:
        return Note(key, title, "Fewer than two complete trials.")
    v = views(sd)
    columns = [(p, f"params_{p}") for p in sd.param_names if f"params_{p}" in df.columns]
    if not columns:  # no Optuna params (e.g. enqueued configs only): the config fields that vary
        columns = [(f, f"config_{f}") for f in sd.config_fields if f"config_{f}" in df.columns]
    pdims = []
    for label, col in columns:
        s = base[col]
        if s.isna().any() or s.astype(str).nunique() < 2:
            continue
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().all():
            dim = dict(label=label, values=num.to_numpy(dtype=float))
            uniq = np.unique(dim["values"])
            if len(uniq) <= 12:  # ticks at the values that exist (no 2.2, 2.4 on an integer axis)
                dim.update(tickvals=uniq.tolist(), ticktext=[_fmt_level(u) for u in uniq])
            pdims.append(dim)
            continue
        cats = sorted(s.astype(str).unique(), key=_natural)
        if len(cats) > 24:
            continue
        codes = s.astype(str).map({c: i for i, c in enumerate(cats)}).to_numpy()
        pdims.append(dict(label=label, values=codes, tickvals=list(range(len(cats))), ticktext=cats,
                          range=[-0.3, len(cats) - 0.7]))
    pdims = pdims[:16]
    for n in names:
        pdims.append(dict(label=v[n].short, values=base[n].to_numpy(dtype=float) * v[n].scale))
    if len(pdims) < 2:
        return Note(key, title, "Not enough varying dimensions.")
    color0 = names[0]
    scale_for = {n: ("Viridis" if sd.objective(n).direction == "maximize" else "Viridis_r") for n in names}
    fig = go.Figure(go.Parcoords(
        line=dict(color=base[color0].to_numpy(dtype=float) * v[color0].scale, colorscale=scale_for[color0],
                  showscale=True, colorbar=dict(title=dict(text=v[color0].short))),
        dimensions=pdims, labelangle=-18, labelfont=dict(size=12), tickfont=dict(size=11)))
    buttons = [dict(label=f"colour by {v[n].short}", method="restyle",
                    args=[{"line.color": [base[n].to_numpy(dtype=float) * v[n].scale],
                           "line.colorscale": scale_for[n], "line.colorbar.title.text": v[n].short}])
               for n in names]
    if len(buttons) > 1:
        fig.update_layout(updatemenus=[dict(type="buttons", direction="right", buttons=buttons, x=0,
                                            xanchor="left", y=-0.04, yanchor="top", bgcolor="#fff",
                                            bordercolor="#bbb", font=dict(size=12))])
    _layout(fig, height=540)
    fig.update_layout(margin=dict(l=60, r=40, t=90, b=60))
    units = "; ".join(f"{v[n].short} = {v[n].label}" for n in names if v[n].label != v[n].short)
    caption = (f"{len(base)} complete trials, one line each, coloured by an objective (yellow = better; "
               "buttons below switch it). Drag along an axis to keep only a range; click it again to clear. "
               + (f"Axes: {units}." if units else ""))
    return Figure(key, title, fig, caption, 540)


# ------------------------------------------------------------------------- importances
def importance_figure(sd: StudyData) -> Figure | Note:
    key, title = "importance", "Parameter importances per objective (PED-ANOVA)"
    df = sd.trials
    names = [o.name for o in sd.objectives if o.name in df.columns]
    sample = statistic_sample(sd, names, MIN_IMPORTANCE_TRIALS)
    base = sample.trials
    params = [p for p in sd.param_names if f"params_{p}" in df.columns and base[f"params_{p}"].nunique() > 1]
    if len(base) < MIN_IMPORTANCE_TRIALS:
        return Note(key, title, f"Skipped: importances need at least {MIN_IMPORTANCE_TRIALS} complete trials "
                                f"with Optuna params; this study has {len(base)} ({sample.words}).")
    if not params:
        return Note(key, title, "Skipped: no Optuna parameter varies across the complete trials.")
    sampled = len(base) > MAX_IMPORTANCE_TRIALS
    if sampled:  # a statistic, not a front: a seeded uniform sample keeps the build fast
        base = base.sample(n=MAX_IMPORTANCE_TRIALS, random_state=0).sort_index()
    try:
        scores = _importances(sd, base, params, names)
    except Exception as exc:  # noqa: BLE001  (a degenerate study: say so, keep the page)
        return Note(key, title, f"Skipped: optuna.importance failed: {one_line(exc)}")
    v = views(sd)
    order = sorted(params, key=lambda p: -max(scores[n].get(p, 0.0) for n in names))
    fig = go.Figure()
    palette = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2"]
    for i, n in enumerate(names):
        fig.add_trace(go.Bar(y=order[::-1], x=[scores[n].get(p, 0.0) for p in order[::-1]], orientation="h",
                             name=v[n].short if n in v else n, marker_color=palette[i % len(palette)],
                             hovertemplate="%{y}: %{x:.3f}<extra>" + n + "</extra>"))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="importance (normalised per objective)")
    height = max(300, 60 + 26 * len(order) * max(1, len(names)) // 1.6)
    _layout(fig, height=int(height))
    over = (f"a seeded random sample of {len(base)} of the complete trials" if sampled
            else sample.words)
    caption = (f"optuna.importance with PedAnovaImportanceEvaluator (fANOVA needs scikit-learn), one "
               f"objective at a time over {over} (presets excluded); the importance "
               "of a parameter is how differently it is distributed among the top 10% of trials.")
    return Figure(key, title, fig, caption, int(height))


def _importances(sd: StudyData, base: pd.DataFrame, params: list[str], names: list[str]) -> dict:
    import warnings

    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.trial import create_trial

    dists = sd.param_distributions
    study = optuna.create_study(directions=["minimize"] * len(names))  # in memory: a scratch copy
    trials = []
    for r in base.to_dict("records"):
        p = {k: _native(r[f"params_{k}"]) for k in params
             if r.get(f"params_{k}") is not None and r[f"params_{k}"] == r[f"params_{k}"]}
        trials.append(create_trial(params=p, distributions={k: dists[k] for k in p},
                                   values=[float(r[n]) for n in names]))
    study.add_trials(trials)
    out = {}
    for i, n in enumerate(names):
        sign = sd.objective(n).sign  # PED-ANOVA treats lower as better
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[n] = optuna.importance.get_param_importances(
                study, evaluator=PedAnovaImportanceEvaluator(), params=params,
                target=lambda t, i=i, sign=sign: sign * t.values[i])
    return out


def _native(value):
    return value.item() if hasattr(value, "item") else value


# ------------------------------------------------------------------------- latency stages
def latency_stages_figure(sd: StudyData) -> Figure | Note | None:
    key, title = "latency-stages", "Latency per stage"
    df = sd.trials
    if "latency_stages_ms" not in df.columns or df["latency_stages_ms"].isna().all():
        return None
    import json

    prof = df[df["latency_stages_ms"].notna()]
    picked = prof[prof["pareto"] | (prof["category"] == "preset")]
    what = "the Pareto-optimal trials and presets that were profiled"
    if picked.empty:
        picked = prof[prof["category"].isin(["feasible", "infeasible"])]
        what = "profiled complete trials"
    if picked.empty:
        picked = prof
        what = "profiled trials"
    picked = picked.sort_values("latency_ms", na_position="last").head(40)
    stages: list[str] = ["stem", "base1", "base2", "base3", "overview", "focus3", "focus4", "head"]
    rows = []
    for r in picked.to_dict("records"):
        d = json.loads(r["latency_stages_ms"])
        for k in d:
            if k not in stages:
                stages.append(k)
        label = (f"{r['preset']} (#{r['number']})" if isinstance(r.get("preset"), str)
                 else f"trial {r['number']}")
        rows.append((label, d, r))
    stages = [st for st in stages if any(st in d for _, d, _ in rows)]
    palette = ["#BAB0AC", "#9ecae1", "#6baed6", "#2171b5", "#EECA3B", "#F58518", "#E45756", "#79706E",
               "#B279A2", "#9D755D"]
    fig = go.Figure()
    labels = [lab for lab, _, _ in rows][::-1]
    for i, st in enumerate(stages):
        xs = [d.get(st, 0.0) for _, d, _ in rows][::-1]
        fig.add_trace(go.Bar(y=labels, x=xs, orientation="h", name=st,
                             marker_color=palette[i % len(palette)],
                             hovertemplate="%{y}: " + st + " %{x:.2f} ms<extra></extra>"))
    fig.update_layout(barmode="stack", legend=dict(traceorder="normal"))
    lat = sd.latency_setting
    v = metric_view("latency_ms", sd.resolution, lat)
    fig.update_xaxes(title_text=v.label.replace("median", "median, per stage"))
    height = max(280, 90 + 24 * len(rows))
    _layout(fig, height=height)
    caption = (f"Per-stage latency (torch.profiler) of {what}, fastest first (up to 40). "
               "Stages follow OverLoCK.stage_modules(): stem, Base-Net stages 1-3, Overview-Net, "
               "Focus-Net stages 3-4, head.")
    return Figure(key, title, fig, caption, height)


def latency_model_figure(sd: StudyData) -> Figure | None:
    """Predicted against measured latency, where the study used a latency model (`latency.model`):
    measured trials as points beside the y = x line and the model's stated margin; configs predicted
    over the budget (never measured: draws the proposer rejected, `rejected_draws`, or in older
    studies trials recorded infeasible from the prediction) are counted in the caption."""
    df = sd.trials
    if "latency_predicted_ms" not in df.columns or df["latency_predicted_ms"].isna().all():
        return None
    source = df["latency_source"] if "latency_source" in df.columns else pd.Series("", index=df.index)
    own = df[df["reused_from"].isna()] if "reused_from" in df.columns else df
    both = own[own["latency_predicted_ms"].notna() & own["latency_ms"].notna()
               & (source.loc[own.index] != "predicted")]
    skipped = int((source.loc[own.index] == "predicted").sum())     # older studies: PRUNED trials
    measured_over = 0
    if "rejected_draws" in df.columns:           # the proposer: draws rejected before any trial
        skipped += sum(_reason_counts(v).get("latency_predicted", 0) for v in df["rejected_draws"])
        measured_over = sum(_reason_counts(v).get("latency_measured", 0) for v in df["rejected_draws"])
    fig = go.Figure()
    if len(both):
        lo = float(min(both["latency_ms"].min(), both["latency_predicted_ms"].min()))
        hi = float(max(both["latency_ms"].max(), both["latency_predicted_ms"].max()))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="predicted = measured",
                                 line=dict(color="#79706E", dash="dash"), hoverinfo="skip"))
        margins = both.get("latency_model_margin")
        margin = float(margins.dropna().iloc[-1]) if margins is not None and margins.notna().any() else None
        if margin is not None and math.isfinite(margin) and margin < 1:
            for factor, name in ((1 + margin, f"+{margin:.0%} (stated margin)"), (1 - margin, f"-{margin:.0%}")):
                fig.add_trace(go.Scatter(x=[lo, hi], y=[lo * factor, hi * factor], mode="lines",
                                         name=name, line=dict(color="#BAB0AC", dash="dot"),
                                         hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=both["latency_ms"], y=both["latency_predicted_ms"], mode="markers", name="measured trials",
            marker=dict(color="#4C78A8", size=8),
            text=[f"trial {n}" for n in both["number"]],
            hovertemplate="%{text}: measured %{x:.3f} ms, predicted %{y:.3f} ms<extra></extra>"))
    v = metric_view("latency_ms", sd.resolution, sd.latency_setting)
    fig.update_xaxes(title_text="measured " + v.label)
    fig.update_yaxes(title_text="predicted (latency model, before measuring)")
    _layout(fig, height=460)
    within = ((both["latency_predicted_ms"] / both["latency_ms"] - 1).abs() <= 0.10).mean() if len(both) else float("nan")
    budget = sd.constraints.get("latency_ms")
    caption = (f"Each measured trial's latency against the model's prediction made before it was "
               f"measured ({len(both)} trials; {within:.0%} within ±10 %). "
               f"{skipped} config(s) were predicted over the latency budget"
               + (f" ({budget:g} ms)" if budget else "")
               + " by more than the model's stated margin and never measured (rejected draws, or "
               "trials recorded infeasible in studies older than the proposer)."
               + (f" {measured_over} draw(s) the model could not place within the budget were "
                  "measured over it before they became trials (rejected draws)." if measured_over else ""))
    return Figure("latency-model", "Latency: predicted against measured", fig, caption, 460)
