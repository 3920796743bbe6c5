"""`overlock-nas search STUDY.yaml`: run or resume a constrained multi-objective study."""

from __future__ import annotations

import signal
import sys
import time
from collections import deque

import click


def _budget_progress(p) -> str:
    """The trial budget's progress, in what it counts (`trials_count`)."""
    if p.counts == "trained":
        return f"{p.counted}/{p.target} trained"
    return f"{p.done}/{p.target} done"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Display:
    """Live status (trials done / feasible / failed, Pareto size, best so far, ETA) on a terminal;
    one plain line per event otherwise (pipes, CI logs)."""

    def __init__(self, console, title: str):
        self.console = console
        self.title = title
        self.lines: deque[str] = deque(maxlen=8)
        self.progress = None
        self.live = None
        self._last_plain = 0.0

    def __enter__(self):
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._render(), console=self.console, refresh_per_second=4,
                             transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    def status(self) -> str:
        p = self.progress
        if p is None:
            return "starting Ray and the study..."
        parts = [_budget_progress(p), f"{p.complete} complete ({p.feasible} feasible)"]
        if p.infeasible:
            parts.append(f"{p.infeasible} over budget (skipped)")
        if p.halved:
            parts.append(f"{p.halved} stopped early")
        parts.append(f"{p.failed} failed")
        if p.reused:
            parts.append(f"{p.reused} reused")
        parts.append(f"{p.running} running")
        second = [f"Pareto front {p.pareto}"]
        if p.best:
            second.append(f"best {p.best}")
        second.append(f"elapsed {_duration(p.elapsed_s)}")
        second.append(f"ETA {_duration(p.eta_s)}")
        return " | ".join(parts) + "\n" + " | ".join(second)

    def _render(self):
        from rich.console import Group
        from rich.panel import Panel
        from rich.text import Text

        body = [Text(line, overflow="ellipsis", no_wrap=True) for line in self.lines]
        return Panel(Group(*body, Text(""), Text(self.status(), style="bold")),
                     title=self.title, title_align="left")

    def __call__(self, progress, line):
        self.progress = progress
        if line is not None:
            self.lines.append(line)
        if self.live is not None:
            self.live.update(self._render())
        elif line is not None:
            self.console.print(line, highlight=False, soft_wrap=True, markup=False)
            now = time.monotonic()
            if now - self._last_plain > 15 or progress.done == progress.target:
                self._last_plain = now
                self.console.print("  [" + self.status().replace("\n", " | ") + "]",
                                   highlight=False, soft_wrap=True, markup=False)


def _front_table(result, console):
    from rich.table import Table

    from nas.storage import DIRECTIONS, METRICS, format_value

    rows = [t for t in result.pareto if t.user_attrs.get("reused_from") is None]
    first = result.objectives[0]
    rows.sort(key=lambda t: t.values[0], reverse=DIRECTIONS.get(first) == "maximize")
    table = Table(title=f"Feasible Pareto front: {len(rows)} architecture(s)", title_justify="left")
    table.add_column("trial", justify="right")
    shown = list(result.objectives)
    for extra in ("params", "flops", "latency_ms"):
        if extra not in shown and any(t.user_attrs.get(extra) is not None for t in rows):
            shown.append(extra)
    for name in shown:
        metric = METRICS.get(name)
        unit = metric.unit if metric is not None and metric.unit not in ("", "%") else ""
        table.add_column(f"{name} ({unit})" if unit else name, justify="right")
    table.add_column("architecture")
    for t in rows:
        earlier = t.user_attrs.get("reused_from_study")     # trained by an earlier study
        cells = [f"{t.number} (study {earlier.get('study')} #{earlier.get('trial')})"
                 if isinstance(earlier, dict) else str(t.number)]
        for name in shown:
            v = t.values[result.objectives.index(name)] if name in result.objectives \
                else t.user_attrs.get(name)
            cells.append("-" if v is None else format_value(name, v).split(" ")[0])
        cells.append(_compact(t.user_attrs.get("config")) or t.user_attrs.get("summary", ""))
        table.add_row(*cells)
    return table, rows


@click.command("search")
@click.argument("study_file", type=click.Path(dir_okay=False))
@click.option("--address", default=None, metavar="HOST:PORT",
              help="Ray cluster to run trials on (default: $RAY_ADDRESS, else a local Ray).")
@click.option("--trials", type=int, default=None,
              help="Total trial budget, overriding the file (raise it to extend a finished study).")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: the file's output_dir, else runs/<name>).")
@click.option("--reuse-from", "reuse_from", multiple=True, metavar="RUN_DIR|STORE",
              help="Reuse the results of earlier studies here (repeatable): a run directory, a folder "
                   "of run directories, a journal file or an RDB URL (default: the run directories "
                   "beside this one, or the other studies of the study file's storage).")
@click.option("--no-reuse", is_flag=True, default=False,
              help="Reuse no earlier study's results: train every architecture this study draws.")
def command(study_file, address, trials, run_dir, reuse_from, no_reuse):
    """Run the study in STUDY_FILE, or continue it: running the same command again resumes.

    Stores everything in the run directory (Optuna journal `study.log`, weights, latency cache);
    `overlock-nas report RUN_DIR` and `overlock-nas export RUN_DIR --trial N` read it.
    Ctrl-C stops cleanly: trials in flight are recorded as interrupted and re-queued.
    An architecture an earlier study trained the same way (evaluator settings, data set, epochs,
    seed) is reused from it, not trained again (docs/how-to/reuse.md).
    """
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:          # logs and pipes: no 80-column squeeze of the table
        console = Console(highlight=False, soft_wrap=True, width=max(console.width, 140))
    if no_reuse and reuse_from:
        raise click.UsageError("--no-reuse and --reuse-from: give one of them")
    reuse = None if no_reuse else (list(reuse_from) or "neighbours")
    spec, engine = _engine(study_file, run_dir, address, trials, reuse)
    constraints = ", ".join(f"{k} <= {_budget(k, v)}" for k, v in spec.constraints.items()) or "none"
    objectives = ", ".join(f"{o} ({d[:3]})" for o, d in zip(spec.objectives, spec.directions))
    console.print(f"[bold]study {spec.name}[/bold]: {engine.target} trials | objectives {objectives} "
                  f"| constraints {constraints} | sampler {spec.sampler_name} | run dir {_shown(engine.run_dir)}")
    started = time.monotonic()
    result = _run(engine, _Display(console, f"overlock-nas search {spec.name}"), console)
    wall = time.monotonic() - started
    p = result.progress
    run = _shown(result.run_dir)
    if result.interrupted:
        console.print(f"interrupted after {_duration(wall)}: {_budget_progress(p)}, the ones in "
                      f"flight were re-queued; run the same command to continue ({run})")
        sys.exit(130)
    store = getattr(engine, "store", None)
    if store is not None and (store.studies or store.skipped):    # said at the start, kept in sight
        console.print(store.describe(), markup=False)
    _summary(result, spec, console, wall)


def _engine(study_file, run_dir, address, trials, reuse_from=None):
    """(spec, engine) of the study file; a damaged journal is refused before any output (the
    engine checks it again under its lock)."""
    from nas.engine import SearchEngine, SearchError
    from nas.rundir import RunDirError, claim_run_dir
    from nas.storage import JOURNAL_NAME, LOCK_NAME, StorageError, check_journal
    from nas.study import StudyFileError, load_study_file

    try:
        spec = load_study_file(study_file)
        if not spec.storage:
            journal = spec.run_dir(run_dir) / JOURNAL_NAME
            if journal.is_file():
                check_journal(journal, driver_lock=journal.with_name(LOCK_NAME))
        engine = SearchEngine(spec, run_dir, address=address, trials=trials, reuse_from=reuse_from)
        claim_run_dir(engine.run_dir, study_file=study_file)    # after every setting is checked
        return spec, engine
    except (StudyFileError, SearchError, StorageError, RunDirError) as e:
        raise click.ClickException(str(e)) from None


def _run(engine, display, console):
    """The search, with Ctrl-C / SIGTERM asking it to stop (a second one stops the cleanup)."""
    from nas.engine import SearchError
    from nas.executor import ExecutorError

    def on_signal(signum, frame):
        if engine.stopping:            # a second Ctrl-C: stop waiting for the cleanup
            raise KeyboardInterrupt
        engine.request_stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    engine.on_progress = display
    try:
        with display:
            return engine.run()
    except (SearchError, ExecutorError) as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        console.print("interrupted during cleanup; run the same command to continue")
        sys.exit(130)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _summary(result, spec, console, wall: float) -> None:
    """The front, the counts, and what to run next."""
    from nas.selection import rank
    from nas.storage import DIRECTIONS, Objective

    p, run = result.progress, _shown(result.run_dir)
    table, rows = _front_table(result, console)
    if rows:
        from space import macs_label

        console.print(table)
        console.print(f"{macs_label(rows[0].user_attrs['resolution'], 1)}; params of the deploy "
                      "model without the aux head")
    else:
        console.print("No feasible trial has completed: the feasible Pareto front is empty.")
    console.print(f"{p.done} trials ({p.complete} complete, {p.feasible} feasible, {p.infeasible} over "
                  f"budget (skipped, not trained), {p.halved} stopped early, {p.failed} failed, "
                  f"{p.reused} reused) in {_duration(wall)} this run")
    if p.rejected:      # draws over a budget, rejected before they became trials
        console.print(p.rejected)
    if p.stopped:
        console.print(f"stopped asking before the budget ({_budget_progress(p)}): {p.stopped}")
    score = spec.score_metric or result.objectives[0]
    best = None
    if rows:   # ties as `export --best` breaks them
        objectives = [Objective(n, DIRECTIONS[n]) for n in result.objectives]
        best = rank(rows, objectives, score, DIRECTIONS[score])[0][1]
    console.print("next:")
    console.print(f"  overlock-nas report {run}")
    if best is not None:
        console.print(f"  overlock-nas export {run} --trial {best.number}    # best {score}")
        if len(result.objectives) > 1 and len(rows) > 2:
            console.print(f"  overlock-nas export {run} --knee    # the front's knee point")
    else:
        console.print("  (no feasible trial yet: relax the constraints or raise --trials)")


def _compact(config: dict | None) -> str:
    """The searched shape of a config in one short line."""
    if not config:
        return ""
    j = lambda v: "-".join(str(x) for x in v)  # noqa: E731
    return (f"depths {j(config['base_depths'])}|{config['overview_depth']}|{j(config['focus_depths'])} "
            f"widths {j(config['widths'])} R{config['region_count']} "
            f"k{j(config['dynamic_kernels'])}/{config['small_kernel']} heads {j(config['focus_heads'])}")


def _shown(path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    import os

    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


def _budget(name: str, value: float) -> str:
    from nas.storage import format_value

    return format_value(name, value)
