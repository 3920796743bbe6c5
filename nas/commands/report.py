"""`overlock-nas report`: the HTML report of a study, or a local server browsing many."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("report")
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--storage", metavar="URL", help="Optuna storage URL (or a journal file) instead of RUN_DIR.")
@click.option("--study", "study_name", metavar="NAME", help="Study name; needed when the storage holds several.")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write [default: RUN_DIR/report.html, or ./NAME-report.html].")
@click.option("--open", "open_browser", is_flag=True, help="Open the report (or the index) in a browser.")
@click.option("--serve", is_flag=True,
              help="Serve an index of every study under RUN_DIR (a folder of runs) on 127.0.0.1.")
@click.option("--port", type=int, default=0, show_default=True, help="Port for --serve (0: a free one).")
def command(run_dir, storage, study_name, out, open_browser, serve, port):
    """Write one self-contained HTML report of a study (works offline), or browse many.

    \b
      overlock-nas report runs/quickstart                 # -> runs/quickstart/report.html
      overlock-nas report --storage sqlite:///nas.db --study wide --out wide.html
      overlock-nas report runs --serve --port 8765        # index of every study under runs/
    """
    from reports import ReportError

    try:
        if serve:
            if run_dir is None:
                raise ReportError("--serve needs the folder to index: overlock-nas report RUNS_DIR --serve")
            if storage or out:
                raise ReportError("--serve indexes a folder; it takes no --storage or --out")
            from reports.serve import serve as serve_folder

            serve_folder(run_dir, port=port, open_browser=open_browser, echo=click.echo)
            return
        if run_dir is None and storage is None:
            raise ReportError("give a RUN_DIR or --storage URL --study NAME")
        from reports import build_report

        t0 = time.perf_counter()
        path = build_report(run_dir=run_dir, storage=storage, study_name=study_name, out=out)
        size = path.stat().st_size / 2**20
        click.echo(f"wrote {path} ({size:.1f} MiB) in {time.perf_counter() - t0:.1f} s")
        if open_browser:
            import webbrowser

            webbrowser.open(path.resolve().as_uri())
    except ReportError as exc:  # anything unexpected: one line from `nas.cli` (--debug: traceback)
        raise click.ClickException(str(exc)) from None
