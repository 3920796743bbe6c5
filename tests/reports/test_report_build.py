"""Building reports (no browser): what the page holds, what it draws, and the edge cases."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import optuna
import pandas as pd
import plotly.offline
import pytest

from reports import ReportError, build_report, load_trials, render_report
from reports.data import load_study_data

MACS_LABEL = "GMACs (fvcore; the paper's FLOPs), 1x3x224x224"


def _figures(html: str) -> dict:
    blobs = re.findall(r'<script type="application/json" id="(fig-[^"]+)-data">(.*?)</script>', html, re.S)
    return {k: json.loads(v) for k, v in blobs}


def _decode(arr):
    """A plotly JSON array: a list, or a typed array {"dtype", "bdata"}."""
    if isinstance(arr, dict) and "bdata" in arr:
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]))
    return np.asarray(arr, dtype=object)


@pytest.fixture(scope="module")
def built(study_dir, tmp_path_factory):
    out = build_report(study_dir, out=tmp_path_factory.mktemp("html") / "report.html")
    return out.read_text(encoding="utf-8"), load_trials(study_dir)


def test_plotly_js_embedded_once_and_nothing_remote(built):
    html, _ = built
    js = plotly.offline.get_plotlyjs()
    assert html.count(js[:300]) == 1
    assert html.count("<script") - html.count('<script type="application/json"') == 3  # hooks, plotly, main
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', html)
    assert "cdn.plot.ly" not in html.replace(js, "")
    figs = _figures(html)
    assert len(figs) >= 8
    assert len(html) < len(js) + 4 * 2**20  # 120 trials: the page is mostly plotly.js


def test_trials_frame_follows_the_contract(built):
    _, df = built
    assert {"number", "state", "category", "feasible", "pareto", "accuracy", "flops", "latency_ms",
            "params", "summary"} <= set(df.columns)
    cats = df.groupby("category")["state"].unique().to_dict()
    assert set(cats["not_trained"]) == {"PRUNED"} and set(cats["partial"]) == {"PRUNED"}
    assert set(cats["failed"]) == {"FAIL"} and set(cats["running"]) == {"RUNNING"}
    assert sorted(df.loc[df.category == "preset", "preset"]) == ["overlock_t", "overlock_xt"]
    # the front: complete, feasible, full fidelity, no preset, non-dominated; everything else feasible is dominated
    front = df[df.pareto]
    assert len(front) >= 3
    assert (front.state == "COMPLETE").all() and front.feasible.all() and (front.category == "feasible").all()
    y = df[df.category == "feasible"][["accuracy", "flops", "latency_ms"]].to_numpy() * [-1, 1, 1]
    on = df[df.category == "feasible"].pareto.to_numpy()
    for i in range(len(y)):
        dominated = np.any(np.all(y <= y[i], axis=1) & np.any(y < y[i], axis=1))
        assert dominated != on[i]
    # over a budget: broken (constraint value > 0) and never trained (the engine prices every budget,
    # latency included, before training, so no COMPLETE trial breaks one)
    inf = df[df.category == "not_trained"]
    assert len(inf) and (inf[["constraint_flops", "constraint_latency_ms"]].max(axis=1) > 0).all()


def test_pareto_figure_draws_every_point_with_labels_budgets_and_presets(built):
    html, df = built
    fig = _figures(html)["fig-pareto-flops-accuracy"]
    assert fig["layout"]["xaxis"]["title"]["text"].startswith(MACS_LABEL)
    names = [t.get("name", "") for t in fig["data"]]
    pareto = next(t for t in fig["data"] if t.get("name", "").startswith("Pareto-optimal"))
    assert len(_decode(pareto["x"])) == int(df.pareto.sum())  # never down-sampled
    drawn = sum(len(_decode(t["x"])) for t in fig["data"] if t.get("mode", "").startswith("markers"))
    assert drawn == int(df.flops.notna().sum())  # every trial with a FLOPs value is a point
    for word in ("feasible", "infeasible", "stopped early", "failed", "official preset", "not trained"):
        assert any(word in n for n in names), (word, names)
    preset = next(t for t in fig["data"] if t.get("name", "").startswith("official preset"))
    assert sorted(preset["text"]) == ["T", "XT"]
    assert any("base [" in h for h in preset["hovertext"])  # hover: the config summary
    budget_x = [s["x0"] for s in fig["layout"]["shapes"] if s.get("x0") == s.get("x1")]
    assert budget_x == [pytest.approx(4.5)]  # flops <= 4.5e9, in GMACs


def test_report_sections_and_export_commands(built, study_dir):
    html, df = built
    for title in ("Pareto fronts", "Pareto-optimal trials", "Hypervolume history", "Design-space EDFs",
                  "Parallel coordinates", "Parameter importances", "Latency per stage", "Failures and pruning",
                  "Study in progress"):
        assert title in html, title
    for n in df[df.pareto].number:
        assert f"overlock-nas export {study_dir} --trial {n}</code>" in html
    # the caption counts the front, and the trials an export picks off it apart
    picked_off = int(((df["pick"] != "") & ~df.pareto).sum())
    assert picked_off and f"Rows: the {int(df.pareto.sum())} feasible Pareto-optimal trials" in html
    assert f"then {picked_off} off the front that an export picks" in html
    edf = _figures(html)["fig-edf"]
    labels = [b["label"] for b in edf["layout"]["updatemenus"][0]["buttons"]]
    assert labels[:2] == ["region count R", "Overview / Focus depth split"]
    assert "region_count" not in labels  # the same partition as "region count R": not repeated
    assert "PedAnova" in html and "reference point 1.1" in html


def test_downloads_hold_every_trial(built):
    html, df = built
    uris = dict(re.findall(r'download="[^"]+\.(csv|parquet)" href="data:[^;]+;base64,([^"]+)"', html))
    csv = pd.read_csv(io.BytesIO(base64.b64decode(uris["csv"])))
    parquet = pd.read_parquet(io.BytesIO(base64.b64decode(uris["parquet"])))
    for table in (csv, parquet):
        assert len(table) == len(df) and list(table["number"]) == list(df["number"])
        assert table["pareto"].sum() == df["pareto"].sum()


def test_large_downloads_go_to_sidecar_files(study_dir, tmp_path):
    sd = load_study_data(study_dir)
    out = tmp_path / "r.html"
    html = render_report(sd, out, embed_limit=1000)
    csv = tmp_path / "r.synthetic-trials.csv"
    assert csv.is_file() and (tmp_path / "r.synthetic-trials.parquet").is_file()
    assert f'href="{csv.name}"' in html and "file next to this page" in html
    assert len(pd.read_csv(csv)) == len(sd.trials)


def test_failed_only_and_empty_studies_give_a_clear_page(make_study, tmp_path):
    html = build_report(make_study("f", n_trials=5, failed_only=True, presets=())).read_text()
    assert "All 5 trials failed" in html
    assert any(reason in html for reason in ("NaN loss", "OOM", "timeout"))
    assert "<script type=\"application/json\"" not in html  # nothing to draw...
    assert plotly.offline.get_plotlyjs()[:300] not in html   # ...so no plotly.js either
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    optuna.create_study(storage=storage, study_name="empty", directions=["maximize", "minimize"])
    html = build_report(tmp_path).read_text()
    assert "This study has no trials yet" in html


def test_two_objectives_single_objective_and_a_bare_optuna_study(make_study, tmp_path):
    html = build_report(make_study("two", n_trials=45, objectives=("accuracy", "params"))).read_text()
    figs = _figures(html)
    assert "fig-pareto-params-accuracy" in figs and "fig-pareto-3d" not in figs and "fig-hypervolume" in figs
    assert "Skipped: importances need at least 20" not in html

    html = build_report(make_study("one", n_trials=12, objectives=("accuracy",))).read_text()
    figs = _figures(html)
    assert "fig-best-so-far" in figs and "fig-hypervolume" not in figs
    assert "Best feasible trials" in html and "Skipped: importances need at least 20" in html

    # a study written by plain Optuna, none of the contract's attributes: still a report
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    study = optuna.create_study(storage=storage, study_name="plain", directions=["minimize", "minimize"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), (1 - t.params["x"]) ** 2), n_trials=8)
    html = build_report(tmp_path).read_text()
    assert "fig-pareto-objective_0-objective_1" in _figures(html)


def test_rdb_storage_and_study_selection(make_study, tmp_path):
    run = make_study("small", n_trials=24, presets=("overlock_xt",))
    url = f"sqlite:///{tmp_path / 'nas.db'}"
    src = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run / "study.log")))
    optuna.copy_study(from_study_name="synthetic", from_storage=src, to_storage=url, to_study_name="copied")
    optuna.create_study(storage=url, study_name="other")
    with pytest.raises(ReportError, match="holds 2 studies: pass --study NAME"):
        build_report(storage=url)
    out = build_report(storage=url, study_name="copied", out=tmp_path / "copied.html")
    html = out.read_text()
    assert f"overlock-nas export --storage {url} --study copied --trial" in html
    assert {"fig-pareto-flops-accuracy", "fig-hypervolume", "fig-edf"} <= set(_figures(html))
    with pytest.raises(ReportError, match="no such SQLite file"):
        build_report(storage=f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()  # reading never creates a database


def test_compute_label_is_worded_as_the_space_package_words_it():
    space = pytest.importorskip("space")
    from reports.metrics import macs_label

    for args in [((224, 224), 1, "fvcore"), ((256, 192), 4, "paper"), (160, 1, "fvcore")]:
        assert macs_label(*args) == space.macs_label(*args)
    assert macs_label((224, 224)) == MACS_LABEL


def test_too_few_complete_trials_draw_statistics_at_the_first_rung(make_study):
    """The quickstart's case: successive halving stopped some trials, too few completed for an
    importance plot. Every trained trial reached the first rung, so the statistic is drawn there,
    at one fidelity, and the caption says so (before: "importances need at least 20 trials")."""
    from reports import figures as F

    sd = load_study_data(make_study("halved", n_trials=30))
    complete = F.complete_sample(sd, ["accuracy", "flops"])
    rung = F.first_rung_sample(sd, ["accuracy", "flops"])
    stopped = rung.trials[rung.trials["category"] == "partial"]
    assert len(stopped) and len(rung.trials) > len(complete.trials)
    for number, score in zip(stopped["number"], stopped["accuracy"]):        # its rung-1 score
        ua = sd.trials.set_index("number").loc[number]
        assert score == pytest.approx(json.loads(ua["rung_scores"])["2"])
    assert F.statistic_sample(sd, ["accuracy"], len(complete.trials)).words == complete.words
    drawn = F.statistic_sample(sd, ["accuracy", "flops"], len(complete.trials) + 1)
    assert drawn.words == rung.words and "first successive-halving rung" in drawn.words
    assert F.edf_figure(sd).caption.count(complete.words) == 1                # enough complete: as before
