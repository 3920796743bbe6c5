"""Reports on search studies: one self-contained HTML page per study, and a small server that
indexes every study under a folder.

    >>> from reports import build_report, load_trials
    >>> build_report("runs/quickstart")                 # writes runs/quickstart/report.html
    >>> build_report(storage="sqlite:///nas.db", study_name="wide", out="wide.html")
    >>> df = load_trials("runs/quickstart")             # one row per trial (pandas)

What a study stores is fixed by `docs/reference/storage.md`; this package only reads it.
"""

from __future__ import annotations

from pathlib import Path

from nas.util import one_line, write_atomic

from .data import ReportError, StudyData, load_study_data, load_trials

__all__ = ["build_report", "render_report", "load_trials", "load_study_data", "ReportError",
           "StudyData", "EMBED_LIMIT_BYTES"]

# downloads above this size (CSV + Parquet together) go to sidecar files instead of data: URIs
EMBED_LIMIT_BYTES = 8 * 2**20


def render_report(sd: StudyData, out: Path | None = None, embed_limit: int = EMBED_LIMIT_BYTES,
                  sections=None) -> str:
    """The HTML of the report on `sd`. Downloads are embedded as data: URIs unless they are over
    `embed_limit` and `out` is given, in which case they are written next to `out` and linked.
    `sections` (from `reports.page.build_sections`) are built here when not given."""
    import plotly.offline

    from . import page, tables

    if sections is None:
        sections = page.build_sections(sd)
    downloads = []
    if not sd.trials.empty:
        stem = f"{sd.study_name}-trials"
        payloads = [("CSV", f"{stem}.csv", tables.csv_bytes(sd), "text/csv"),
                    ("Parquet", f"{stem}.parquet", tables.parquet_bytes(sd), "application/vnd.apache.parquet")]
        embed = out is None or sum(len(p[2]) for p in payloads) <= embed_limit
        for label, name, payload, mime in payloads:
            if embed:
                downloads.append(page.Download(label, name, page.data_uri(payload, mime), len(payload), True))
            else:
                side = Path(out).with_name(f"{Path(out).stem}.{name}")
                side.write_bytes(payload)
                downloads.append(page.Download(label, side.name, side.name, len(payload), False))
    return page.render(sd, sections, downloads, plotly.offline.get_plotlyjs())


def _is_report(path: Path) -> bool:
    """Whether `path` is a page this module wrote (its head names the generator)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    except OSError:
        return False
    return head.startswith(b"<!DOCTYPE html>") and b" \xc2\xb7 overlock-nas report</title>" in head


def build_report(run_dir=None, storage: str | None = None, study_name: str | None = None,
                 out=None) -> Path:
    """Write the HTML report of one study and return its path.

    Args:
        run_dir: a run directory (its `study.log` journal is read).
        storage: an Optuna storage URL (or a journal file path) instead of / besides `run_dir`.
        study_name: which study; needed only when the storage holds several.
        out: the HTML file; default `RUN_DIR/report.html`, or `./<study>-report.html`.

    Raises:
        ReportError: one line saying what is wrong (no such run directory, several studies, ...).
    """
    sd = load_study_data(run_dir, storage, study_name)
    if out is None:
        out = (Path(run_dir) / "report.html") if run_dir is not None else Path(f"{sd.study_name}-report.html")
    out = Path(out)
    if out.is_file() and not _is_report(out):
        raise ReportError(f"--out {out} exists and is not an overlock-nas report: the report never "
                          "replaces another file (a journal, a study file, weights); choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        text = render_report(sd, out)
        write_atomic(out, text)  # a reader never sees half a page
    except OSError as e:
        raise ReportError(f"--out {out}: cannot write there ({one_line(e)})") from None
    return out
