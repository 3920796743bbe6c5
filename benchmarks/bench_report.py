"""Build time and size of the HTML report of a 1,000-trial study (target: build < 10 s).

The study is written through Optuna's API into a journal (`tests/support/synthetic.py`, per
docs/reference/storage.md): 1,000 trials in every state plus two presets and two RUNNING trials.
The build is timed end to end (open the journal, read every trial, all figures, tables, the
CSV/Parquet downloads, write the file) and by phase; each is the best of `--repeat` runs.

    python benchmarks/bench_report.py [--trials 1000] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # test support: synthetic studies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="keep the run directory (and its report.html) here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    import plotly.offline  # noqa: F401  (imports are not what we time below)

    import reports
    from reports import data, page
    from support.synthetic import write_synthetic_study

    t_import = time.perf_counter() - t0
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    t0 = time.perf_counter()
    run = write_synthetic_study(root / "run", n_trials=args.trials, running=2, seed=0)
    t_write = time.perf_counter() - t0

    totals, phases = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        out = reports.build_report(run)
        totals.append(time.perf_counter() - t0)
        # the same build, by phase
        p0 = time.perf_counter()
        sd = data.load_study_data(run)
        p1 = time.perf_counter()
        sections = page.build_sections(sd)
        p2 = time.perf_counter()
        reports.render_report(sd, out, sections=sections)  # JSON + downloads + HTML
        p3 = time.perf_counter()
        phases.append((p1 - p0, p2 - p1, p3 - p2))
        del sections
    # what a user waits for: a fresh `overlock-nas report RUN_DIR` process, imports included
    import subprocess

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nas.cli", "report", str(run), "--out", str(root / "cli.html")],
                   check=True, cwd=Path(__file__).resolve().parents[1], capture_output=True)
    t_cli = time.perf_counter() - t0
    html = out.read_text(encoding="utf-8")
    js = plotly.offline.get_plotlyjs()
    size = out.stat().st_size
    n_js = html.count(js[:200])
    df = sd.trials
    best = min(totals)
    load, figs, render = (min(p[i] for p in phases) for i in range(3))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"study: {len(df)} trials ({df['state'].value_counts().to_dict()}), "
          f"{int(df['pareto'].sum())} Pareto-optimal; written through Optuna's API in {t_write:.1f} s")
    print(f"imports (once per process): {t_import:.2f} s")
    print(f"build_report, end to end: best {best:.2f} s of {args.repeat} "
          f"({', '.join(f'{t:.2f}' for t in totals)})  target < 10 s: {'OK' if best < 10 else 'MISSED'}")
    print(f"`overlock-nas report RUN_DIR` in a fresh process (imports included): {t_cli:.2f} s")
    print(f"  phases (best): read study {load:.2f} s | figures {figs:.2f} s | "
          f"figure JSON + CSV/Parquet + HTML {render:.2f} s")
    print(f"HTML: {size / 2**20:.2f} MiB; plotly.js {len(js) / 2**20:.2f} MiB embedded {n_js}x; "
          f"the rest {(size - n_js * len(js)) / 2**20:.2f} MiB (figures, tables, CSV + Parquet downloads)")
    print(f"report: {out}")


if __name__ == "__main__":
    main()
