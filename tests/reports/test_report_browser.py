"""The report in a real headless browser (Debian's chromium over the DevTools protocol): it loads
with no console error, every plot renders, nothing is fetched from the network, and a screenshot
shows ink where each plot is."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from reports import build_report


def _keep(path: Path) -> None:
    """Copy a screenshot to $OVERLOCK_NAS_ARTIFACTS, when set, for a person to look at."""
    target = os.environ.get("OVERLOCK_NAS_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def _assert_clean(result) -> None:
    assert result.exceptions == [], result.exceptions
    assert result.console_errors == [], result.console_errors
    assert result.log_errors == [], result.log_errors
    assert result.page_errors == [], result.page_errors
    assert result.network == [], f"the page fetched {result.network}"


def _ink_fraction(png: Path, box: dict) -> float:
    """Fraction of pixels in `box` (a plot's page rectangle) that are not the white background."""
    from PIL import Image

    im = Image.open(png).convert("L")
    left, top = int(box["left"]), int(box["top"])
    crop = im.crop((left, top, left + int(box["width"]), top + int(box["height"])))
    hist = crop.histogram()
    return 1.0 - sum(hist[245:]) / max(1, sum(hist))


def test_report_renders_in_headless_browser(study_dir, browser, tmp_path):
    html = build_report(study_dir, out=tmp_path / "report.html")
    result = browser.open(html.resolve().as_uri(), screenshot=tmp_path / "report-three-objectives.png")
    _keep(result.screenshot)
    _assert_clean(result)

    ids = {p["id"] for p in result.plots}
    expected = {"fig-pareto-flops-accuracy", "fig-pareto-latency_ms-accuracy", "fig-pareto-flops-latency_ms",
                "fig-pareto-3d", "fig-hypervolume", "fig-edf", "fig-parallel", "fig-importance",
                "fig-latency-stages"}
    assert expected <= ids, expected - ids
    assert result.body["total"] == result.body["rendered"] == str(len(result.plots))
    for plot in result.plots:
        assert plot["rendered"] and plot["mainSvg"] >= 1 and plot["traces"] >= 1, plot
        assert plot["width"] > 600 and plot["height"] > 200, plot
        assert plot["svgShapes"] > 10 or plot["canvas"] >= 1, plot  # drawn, not an empty frame
    scatter = {p["id"]: p for p in result.plots}
    assert scatter["fig-pareto-flops-accuracy"]["points"] > 100  # every trial is a drawn point

    # hovering a Pareto point shows its architecture and metrics
    hover = browser.evaluate("""(async () => {
        const div = document.getElementById('fig-pareto-flops-accuracy');
        const i = div.data.findIndex(t => (t.name || '').startsWith('Pareto-optimal'));
        Plotly.Fx.hover(div, [{curveNumber: i, pointNumber: 0}]);
        await new Promise(r => setTimeout(r, 300));
        return Array.from(div.querySelectorAll('.hovertext')).map(e => e.textContent).join(' ');
    })()""")
    assert "Pareto-optimal" in hover and "base [" in hover and "GMACs" in hover, hover
    # the table sorts on a header click (numbers by value, not text)
    order = browser.evaluate("""(() => {
        const t = document.getElementById('pareto-table');
        const th = Array.from(t.querySelectorAll('th')).find(h => h.textContent.startsWith('GMACs'));
        const col = Array.from(th.parentNode.children).indexOf(th);
        th.click();
        return Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[col].getAttribute('data-v')));
    })()""")
    assert len(order) >= 3 and order == sorted(order)

    pytest.importorskip("PIL")
    for plot in result.plots:
        if plot["top"] + plot["height"] <= 16000:
            assert _ink_fraction(result.screenshot, plot) > 0.01, f"{plot['id']} looks blank"


def test_failed_only_study_is_a_clear_page(make_study, browser, tmp_path):
    run = make_study("failing", n_trials=7, failed_only=True, presets=())
    html = build_report(run, out=tmp_path / "failed.html")
    result = browser.open(html.resolve().as_uri(), screenshot=tmp_path / "report-failed-only.png")
    _keep(result.screenshot)
    _assert_clean(result)
    assert "All 7 trials failed" in result.text
    assert "Failures and pruning" in result.text and "Traceback" not in result.text.split("Failures")[0]
    assert result.plots == []


def test_single_objective_page_renders(make_study, browser, tmp_path):
    run = make_study("single", n_trials=30, objectives=("accuracy",), presets=("overlock_xt",))
    html = build_report(run, out=tmp_path / "single.html")
    result = browser.open(html.resolve().as_uri())
    _assert_clean(result)
    ids = {p["id"] for p in result.plots}
    assert "fig-best-so-far" in ids and "fig-pareto-flops-accuracy" in ids
    assert "fig-hypervolume" not in ids and "fig-pareto-3d" not in ids
    assert all(p["rendered"] for p in result.plots)
