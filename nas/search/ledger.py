"""The driver's books: the trials it works on and where each waits, duplicates, the trial budget
and progress.

- `Live`: one trial in the driver's hands; `Queues`: where each waits (a task in flight, ready
  for an evaluation slot, waiting for its latency, parked behind a live trial of the same
  architecture, released by it); `Dedup`: one evaluation per architecture.
- `TrialBudget`: how many stored trials count against `trials` (`trials_count`), kept per trial
  as the driver changes them (one scan of storage at the start, and every few seconds only when
  other drivers may share the study), and why asking stopped early, if it did.
- `Tally` / `Progress`: the counts a progress display shows; `Reporter` keeps them, refreshes the
  front and its best trial, writes one line per event and hands both to `on_progress`, and
  builds the `SearchResult`. It reads the books and the study and writes nothing.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from optuna.trial import FrozenTrial, TrialState

from nas.storage import DIRECTIONS, Objective, format_value as _fmt, is_feasible, pareto_front
from nas.util import preview

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# With `trials_count: trained`, asking stops after this many draws in a row that train nothing
# (over a budget or already evaluated): the space holds (almost) no new architecture within budget.
MAX_DRAWS_WITHOUT_TRAINING = 200


@dataclass(eq=False)
class Live:
    """A trial this driver is working on."""

    trial: Any                        # optuna.Trial
    config: Any = None
    chash: str = ""
    seed: int = 0
    rung: int = 0                     # index into the rung budgets
    metrics: dict = field(default_factory=dict)   # known objective/constraint values
    priced: dict | None = None        # its exact cost, when its proposal was priced (not again)
    eval_s: float = 0.0               # evaluation time of the rungs already run
    started: float = 0.0              # monotonic start of the current task
    handle: Any = None
    kind: str = ""                    # "eval" | "latency" while a task runs
    # the stored trial whose finished rungs this one continues (itself when adopted, the
    # interrupted original for a re-queued copy), or None
    resume_from: FrozenTrial | None = None
    verdict: dict | None = None       # the latency model's prediction, when the study has one
    first_latency: dict | None = None  # a measurement the model disagreed with, measured again
    alone: bool = False               # measured alone: the set it was measured in was lost
    resent: int = 0                   # measurements sent again: the measuring worker was restarting

    @property
    def number(self) -> int:
        return self.trial.number


class Queues:
    """Where every live trial waits. A trial is in exactly one place."""

    def __init__(self):
        self.inflight: dict[Any, Live] = {}       # evaluation task handle -> live
        self.measuring: dict[Any, list[Live]] = {}   # measuring task handle -> the lives it measures
        self.ready: deque[Live] = deque()         # waiting for an evaluation slot
        self.latency: deque[Live] = deque()       # waiting for the measuring worker
        self.parked: dict[str, list[Live]] = {}   # config hash -> duplicates of a live trial
        self.released: deque[Live] = deque()      # duplicates whose original has finished

    def running(self, kind: str) -> int:
        """Trials in a task of `kind` ("eval" or "latency")."""
        if kind == "latency":
            return sum(len(lives) for lives in self.measuring.values())
        return sum(1 for lv in self.inflight.values() if lv.kind == kind)

    def handles(self) -> list:
        """Every task in flight: evaluations and measurements."""
        return list(self.inflight) + list(self.measuring)

    def occupancy(self) -> int:
        """Trials holding or waiting for a slot or a measurement (not the parked duplicates)."""
        return self.running("eval") + len(self.ready) + len(self.latency) + self.running("latency")

    def busy(self) -> bool:
        return bool(self.inflight or self.measuring or self.ready or self.latency or self.parked or self.released)

    def in_progress(self) -> int:
        return len({lv.number for lv in self.inflight.values()}) + self.running("latency") \
            + len(self.ready) + len(self.latency)

    def start(self, lv: Live, handle, kind: str, now: float) -> None:
        """`lv`'s evaluation task started."""
        lv.handle, lv.kind, lv.started = handle, kind, now
        self.inflight[handle] = lv

    def start_measuring(self, lives: list[Live], handle, now: float) -> None:
        """One measuring task started for `lives` (measured together)."""
        for lv in lives:
            lv.handle, lv.kind, lv.started = handle, "latency", now
        self.measuring[handle] = list(lives)

    def next_to_measure(self, size: int) -> list[Live]:
        """The next set for the measuring worker, in queue order: up to `size` trials waiting for
        their latency, or the first one alone when it must be measured alone (`Live.alone`)."""
        first = self.latency.popleft()
        lives = [first]
        if first.alone:
            return lives
        for lv in list(self.latency):
            if len(lives) == size:
                break
            if not lv.alone:
                self.latency.remove(lv)
                lives.append(lv)
        return lives

    def take(self, handle) -> tuple[str, list[Live]]:
        """The lives whose task `handle` ended (or was cancelled), out of flight: one for an
        evaluation, the set measured together for a measurement."""
        lives = self.measuring.pop(handle, None) or [self.inflight.pop(handle)]
        kind = lives[0].kind
        for lv in lives:
            lv.kind, lv.handle = "", None
        return kind, lives

    def next_ready(self) -> Live:
        """The next trial to evaluate: one continuing to its next rung first, else the costliest
        (MACs estimate training time). Longest first leaves the short trials for the end of the
        study, so slots do not idle behind one long last trial."""
        continuing = next((lv for lv in self.ready if lv.rung > 0), None)
        pick = continuing or max(self.ready, key=lambda lv: lv.metrics.get("flops", 0))
        self.ready.remove(pick)
        return pick

    def drain(self) -> list[Live]:
        """Every live trial, each once, and the queues emptied (a stop)."""
        held = list(self.inflight.values()) + [lv for lives in self.measuring.values() for lv in lives] \
            + list(self.ready) + list(self.latency) \
            + [lv for dups in self.parked.values() for lv in dups] + list(self.released)
        self.inflight.clear()
        self.measuring.clear()
        self.ready.clear()
        self.latency.clear()
        self.parked.clear()
        self.released.clear()
        seen, out = set(), []
        for lv in held:
            if lv.number not in seen:
                seen.add(lv.number)
                out.append(lv)
        return out


class Dedup:
    """One evaluation per architecture (config hash): a finished one is reused, a live one is
    waited for (its duplicates parked, released when it finishes)."""

    def __init__(self):
        self.index: dict[str, int] = {}    # config hash -> finished trial number
        self.live: dict[str, Live] = {}    # config hash -> the live trial evaluating it
        self.seen: set[str] = set()        # every config hash drawn in the study

    def remember(self, t: FrozenTrial) -> None:
        """A stored trial (on resume)."""
        ua = t.user_attrs
        if "config_hash" in ua:
            self.seen.add(ua["config_hash"])
        if t.state in FINISHED and "config_hash" in ua and "reused_from" not in ua:
            self.index.setdefault(ua["config_hash"], t.number)

    def finished(self, lv: Live, state: TrialState, queues: Queues) -> None:
        """`lv` was told `state`: index it, and release its parked duplicates."""
        if state in FINISHED and lv.chash:
            self.index.setdefault(lv.chash, lv.number)
        if self.live.get(lv.chash) is lv:
            del self.live[lv.chash]
            queues.released.extend(queues.parked.pop(lv.chash, []))


def counts(t: FrozenTrial, trials_count: str) -> bool:
    """Whether a stored trial counts against the budget (`trials_count`): every one but the
    superseded and those reused from an earlier study (never a new training), or (trained) only those that reached training: COMPLETE (not a repeat), PRUNED
    by successive halving (it has rung scores; PRUNED before training, over a budget or by a
    gate, does not count), FAIL with a config; in flight counts, queued not yet."""
    ua = t.user_attrs
    if ua.get("superseded") or ua.get("reused_from_study") is not None:   # never a new training
        return False
    if trials_count == "sampled":
        return True
    if t.state == TrialState.WAITING or ua.get("infeasible") or ua.get("reused_from") is not None:
        return False
    if t.state == TrialState.PRUNED:
        return bool(ua.get("rung_scores"))
    return not (t.state == TrialState.FAIL and "config_hash" not in ua)


class TrialBudget:
    """The trial budget, counted per stored trial and updated as the driver changes one."""

    def __init__(self, target: int, trials_count: str, space_size: int | None):
        self.target, self.trials_count, self.space_size = target, trials_count, space_size
        self.stopped = ""               # why asking stopped before the budget was spent
        self.counted = 0                # stored trials that count
        self.finished = 0               # ... and are finished
        self.waiting: set[int] = set()  # numbers of queued (WAITING) trials
        self._by_number: dict[int, tuple[bool, bool]] = {}
        self._misses = 0                # draws in a row that trained nothing

    def resync(self, trials: Iterable[FrozenTrial]) -> None:
        """Count from storage (the start, the end, and other drivers' trials in a shared study)."""
        self._by_number, self.counted, self.finished = {}, 0, 0
        self.waiting = set()
        for t in trials:
            self.update(t)

    def update(self, t: FrozenTrial) -> None:
        """Trial `t` (as stored now) was asked, changed or told."""
        c = counts(t, self.trials_count)
        self.update_entry(t.number, c, c and t.state.is_finished())
        if t.state == TrialState.WAITING:
            self.waiting.add(t.number)
        else:
            self.waiting.discard(t.number)

    def asked(self, number: int) -> None:
        """A trial was just asked (new, or a queued one): in flight, it counts in either mode."""
        self.update_entry(number, True, False)
        self.waiting.discard(number)

    def update_entry(self, number: int, counted: bool, finished: bool) -> None:
        old = self._by_number.get(number, (False, False))
        self._by_number[number] = (counted, finished)
        self.counted += counted - old[0]
        self.finished += finished - old[1]

    def counts(self, number: int) -> bool:
        return self._by_number.get(number, (False, False))[0]

    def left(self) -> bool:
        """More trials to ask: under the budget (and new architectures within budget may be
        left), or queued ones, which run first."""
        return (self.counted < self.target and not self.stopped) or bool(self.waiting)

    def draw(self, counted: bool, seen: int) -> str | None:
        """After a new trial started: with `trials_count: trained`, stop asking when the space has
        no new architecture within budget left (every one of its `space_size` drawn, `seen`
        so far, or too many draws in a row that train nothing). Returns the reason, once."""
        if self.trials_count != "trained":
            return None
        if counted:
            self._misses = 0
            return None
        self._misses += 1
        why = ""
        if self.space_size is not None and seen >= self.space_size:
            why = f"all {self.space_size} architectures of the space were drawn"
        elif self._misses >= MAX_DRAWS_WITHOUT_TRAINING:
            why = f"{self._misses} draws in a row were over budget or already evaluated"
        if why and not self.stopped:
            self.stopped = f"{why}: no new architecture within budget is left to train"
            return self.stopped
        return None


@dataclass
class Progress:
    """A snapshot of the study for progress displays."""

    target: int = 0           # trial budget
    counted: int = 0          # trials in the study that count against it
    done: int = 0             # finished (COMPLETE + PRUNED + FAIL)
    complete: int = 0
    feasible: int = 0         # COMPLETE and within every budget
    infeasible: int = 0       # PRUNED before training (a budget broken)
    halved: int = 0           # PRUNED by successive halving
    failed: int = 0
    reused: int = 0
    running: int = 0
    pareto: int = 0
    best: str = ""
    elapsed_s: float = 0.0
    eta_s: float | None = None
    session_done: int = 0
    counts: str = "sampled"   # what the budget counts: "sampled" or "trained" architectures
    stopped: str = ""         # why asking stopped before the budget was spent ("" if it did not)
    rejected: str = ""        # this run's share of draws rejected before training, per reason


class Tally:
    """Counts finished trials by how they ended, for `Progress`."""

    def __init__(self, progress: Progress, feasible):
        self.p = progress
        self._feasible = feasible       # FrozenTrial -> bool (the study's budgets)

    def account(self, t: FrozenTrial) -> None:
        p, ua = self.p, t.user_attrs
        if ua.get("superseded"):
            return
        p.done += 1
        if ua.get("reused_from") is not None or ua.get("reused_from_study") is not None:
            p.reused += 1
        if t.state == TrialState.COMPLETE:
            p.complete += 1
            if self._feasible(t):
                p.feasible += 1
        elif t.state == TrialState.PRUNED:
            if ua.get("infeasible"):
                p.infeasible += 1
            else:
                p.halved += 1
        elif t.state == TrialState.FAIL:
            p.failed += 1


@dataclass
class SearchResult:
    run_dir: Any
    study_name: str
    storage: str
    objectives: list[str]
    progress: Progress
    pareto: list[FrozenTrial]
    interrupted: bool = False
    wall_time_s: float = 0.0


class Reporter:
    """What a progress display is shown: `progress` kept up to date (the counts, the rate, the
    front and its best trial), and a line per event, both handed to `on_progress(progress,
    line)` (`line` None: a periodic tick).

    Args:
        progress: the `Progress` to keep (its `target` is the trial budget).
        objectives: the study's objective names, in order; budgets: {metric: budget}.
        queues: the driver's `Queues` (how many trials are in progress).
    """

    def __init__(self, progress: Progress, objectives: list[str], budgets: dict, queues: Queues):
        self.progress, self.queues = progress, queues
        self.objectives, self.budgets = list(objectives), dict(budgets)
        self.study = self.budget = self.tally = None
        self.score_metric = ""
        self.t0 = 0.0                   # monotonic start of this session
        self.session_done = 0           # trials finished this session
        self.session_counted = 0        # ... and counted in the budget

    def open(self, study, budget: TrialBudget, score_metric: str | None,
             trials: Iterable[FrozenTrial]) -> None:
        """The study, its trial budget and its stored `trials` (counted once; then `finished`)."""
        self.study, self.budget = study, budget
        self.score_metric = score_metric or self.objectives[0]
        self.tally = Tally(self.progress, lambda t: is_feasible(t, self.budgets))
        for t in trials:
            if t.state not in (TrialState.RUNNING, TrialState.WAITING):
                self.tally.account(t)

    def started(self, mode: str, nodes: list[dict], parallel: int, note: str | None, session,
                trials: list[FrozenTrial], running: list[FrozenTrial]) -> list[str]:
        """The lines said when the loop starts: the cluster, the latency pricer's `note`, and
        what a resume found."""
        lines = [f"Ray ({mode}): {len(nodes)} node(s), {sum(n['cpus'] for n in nodes):g} CPUs, "
                 f"{sum(n['gpus'] for n in nodes):g} GPUs; up to {parallel} trial(s) at a time"]
        if note:
            lines.append(note)
        if session.resumed:
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            lines.append(f"resuming {session.storage_label}: {self.progress.done} trials finished, "
                         f"{len(running)} left running, {waiting} queued")
            if session.kept_settings:
                lines.append("evaluator settings the study file leaves unset keep the stored study's "
                             "values (this version's defaults differ): " + ", ".join(
                                 f"{k}={preview(v, 60)}" for k, v in session.kept_settings.items()))
        return lines

    def finished(self, t: FrozenTrial, counted: bool, on_progress) -> None:
        """Trial `t` was told (`counted`: against the budget): counted, and its line shown."""
        self.session_done += 1
        self.session_counted += counted
        self.tally.account(t)
        self.emit(self.line(t), on_progress)

    def emit(self, line: str | None, on_progress) -> None:
        if on_progress is None:
            return
        if line is not None:
            self.refresh_front()
        on_progress(self.snapshot(), line)

    def snapshot(self) -> Progress:
        p, budget = self.progress, self.budget
        p.counted = budget.counted if budget is not None else 0
        p.stopped = budget.stopped if budget is not None else ""
        p.running = self.queues.in_progress()
        p.elapsed_s = time.monotonic() - self.t0
        p.session_done = self.session_done
        if self.session_counted and p.elapsed_s > 0:
            rate = self.session_counted / p.elapsed_s
            p.eta_s = max(0, p.target - budget.finished) / rate
        return p

    def refresh_front(self) -> None:
        """The front's size and the best trial on it (by the score, ties as `export --best`)."""
        from nas.selection import rank

        p = self.progress
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            front = [t for t in pareto_front(self.study) if t.user_attrs.get("reused_from") is None]
        p.pareto = len(front)
        metric = self.score_metric
        if front:
            objectives = [Objective(n, DIRECTIONS[n]) for n in self.objectives]
            value, pick = rank(front, objectives, metric, DIRECTIONS[metric])[0]
            p.best = f"{metric} {_fmt(metric, value)} (#{pick.number})"

    def line(self, t: FrozenTrial) -> str:
        """One line for a told trial: its objectives, or why it ended."""
        ua = t.user_attrs
        head = f"#{t.number} {t.state.name}"
        if t.state == TrialState.COMPLETE:
            parts = [f"{o} {_fmt(o, v)}" for o, v in zip(self.objectives, t.values)]
            feas = "" if is_feasible(t, self.budgets) else " (infeasible)"
            body = ", ".join(parts) + feas
        else:
            body = ua.get("reason", "")
        if ua.get("reused_from") is not None:
            body += f" [reused #{ua['reused_from']}]"
        elif isinstance(ua.get("reused_from_study"), dict):
            origin = ua["reused_from_study"]
            body += f" [reused from study {origin.get('study')} #{origin.get('trial')}]"
        return f"{head}: {body}"

    def result(self, run_dir, study_name: str, storage: str, interrupted: bool) -> SearchResult:
        """The run's result (the budget resynced from storage first, by the driver)."""
        self.refresh_front()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            front = pareto_front(self.study)   # nas.storage's rule, as the report and export
        return SearchResult(run_dir=run_dir, study_name=study_name, storage=storage,
                            objectives=self.objectives, progress=self.snapshot(), pareto=front,
                            interrupted=interrupted,
                            wall_time_s=float(self.study.user_attrs.get("wall_time_s", 0.0)))
