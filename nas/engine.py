"""The ask/tell driver: Optuna owns the study, this one process decides, Ray only executes.

    >>> from nas.study import load_study_file
    >>> from nas.engine import SearchEngine
    >>> result = SearchEngine(load_study_file("studies/quickstart.yaml")).run()
    >>> [t.number for t in result.pareto]

One trial, in the driver (every fact recorded as a user attribute, docs/reference/storage.md):

1. `space.suggest(trial)` samples a config (define-by-run); its hash identifies the architecture.
   The one place a new trial is asked for is `SearchEngine._ask_next` (the seam for sampling).
2. Same hash as a finished trial -> that trial's result is reused (`reused_from`), never re-run.
   Same hash as a trial in flight -> it is parked until that one finishes.
3. Params, FLOPs and memory from the analytic cost model (fvcore cross-check on a sample of
   trials: a mismatch stops the study). A broken budget -> PRUNED, `infeasible`, never trained.
4. Latency, when it is an objective or a constraint: read from the device's store, else measured
   before training by the measuring worker, which prices sampled configs ahead of training (every
   config queued for it, up to 8, measured together), so evaluations never wait for it except a
   trial for its own latency. A broken latency budget ->
   PRUNED, `infeasible`, never trained.
5. An architecture an earlier study trained the same way (`nas.search.reuse`: evaluator settings,
   data set, fidelity, seed policy) is COMPLETE with that result (`reused_from_study`), never
   trained or counted; those results within the budgets are the study's first trials (a warm start).
   Else the evaluator runs as a Ray task. With rungs (successive halving) a trial trains to each rung
   and continues only if its score is in the top 1/eta of the trials that reached that rung (or
   fewer than `min_trials` have, one score per architecture); else it is told PRUNED with
   `fidelity` < 1. COMPLETE always means full fidelity.

Where each part lives (`nas/search/`, one concept each): `session` opens the study and checks a
resume, `ledger` keeps the books (queues, duplicates, the trial budget) and reports progress
(`Reporter`), `pricing` the exact cost and the latency policy (`LatencyPricer.place` /
`.measured` decide, this module applies), `slots` starts queued work on the executor and hands
finished tasks back, `evaluation` reads an evaluation's result and where a continued trial picks
up, `halving` the rung decisions, `recorder` every write to a trial and the tell, `weights` the
weights files. This module is the loop and the trial's steps between them.

Reliability: one driver per run directory (fcntl lock); on start, RUNNING trials left by a dead
driver are re-run under their number (their config was recorded) or failed and re-queued (it was
not); the sampler seed is derived from (seed, number of stored trials) so a restart never
replays; stored objectives, constraints, space, evaluator, latency settings and device are
checked against the file. A trial that raises, yields NaN, runs out of memory or exceeds
`trial_timeout_s` is FAIL with `reason` (its files deleted); a dead worker is retried by Ray.
Stopping (Ctrl-C, `request_stop()`): no new trials; in-flight ones are told FAIL (`reason:
interrupted`) and their params re-queued, so the next run evaluates them first and the budget does
not shrink; a re-queued trial continues from its original's last finished rung (its weights and
optimiser state), an adopted one from its own. Optuna internals: only through `nas._optuna`.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import _optuna
from .executor import Executor
from .rundir import RunDirError, claim_run_dir
from .search.evaluation import COMPLETE, CONTINUE, FAIL, Evaluations, Step
from .search.halving import Rungs
from .search.ledger import (FINISHED, MAX_DRAWS_WITHOUT_TRAINING, Dedup, Live, Progress, Queues,  # noqa: F401
                            Reporter, SearchResult, Tally, TrialBudget, counts)
from .search.pricing import (AGAIN, FAILED, MEASURE, OVER, LatencyPricer, LatencyStep, price, screened,
                             wants_check)
from .search.recorder import IDENTITY_ATTRS, Recorder, broken, set_constraints  # noqa: F401
from .search.session import (CostModelMismatch, DriverBusy, DriverLock, SearchError, Session,  # noqa: F401
                             StudyMismatch, check_latency_device, crashed, left_running, open_session,
                             open_storage, save_wall_time)
from .search.journal import flush as flush_journal
from .search.slots import EVAL_TARGET, Slots  # noqa: F401 - EVAL_TARGET: its old import path
from .search.proposals import ProposalError
from .search import reuse as _reuse
from .search.proposals import for_study as proposals_for
from .search.weights import WeightsDir
from .util import derived_seed, folded, space_size
from .storage import (DIRECTIONS, ERROR_LOG_NAME, Objective, format_value as _fmt,  # noqa: F401
                      is_feasible, named_constraints, pareto_front)

__all__ = ["SearchEngine", "SearchResult", "Progress", "SearchError", "DriverBusy", "StudyMismatch",
           "CostModelMismatch", "DriverLock", "open_storage", "derived_seed", "set_constraints",
           "DIRECTIONS", "Screen", "MAX_DRAWS_WITHOUT_TRAINING"]

LATENCY_TARGET = "nas.worker:run_latencies"   # read when a run starts (tests put a stand-in here)
_LATENCY_GRACE_S = 30.0   # past latency.timeout_s before the driver restarts the measuring worker
_SHARED_RESYNC_S = 10.0   # how often the budget is recounted from a storage other drivers may share
_COLLECT_S = 0.25         # how long one turn of the loop waits for a task to finish

# A screen prices a config before it is trained, cheaply (< 1 ms): it returns {budget name:
# estimated value} for the budgets it expects the config to break ({} when none). A broken one
# makes the trial PRUNED `infeasible` with its estimate recorded (user attr `estimated`, and as its
# constraint value, so samplers learn the region is infeasible), never trained or measured.
Screen = Callable[[Any], dict]


class SearchEngine:
    """Runs (or resumes) one study.

    Args:
        spec: the loaded study file.
        run_dir: overrides the study file's `output_dir`.
        address: a Ray cluster to use (else `RAY_ADDRESS`, else an embedded local Ray).
        trials: overrides the study's trial budget (total, counted from storage).
        on_progress: called as `on_progress(progress, line)` after every event; `line` is a
            one-line description of what happened, or None for a periodic tick.
        num_cpus: CPUs of the embedded local Ray (default: all).
        reuse_from: where to look for earlier studies' results (`nas.search.reuse`): None reuses
            nothing (the default here: a library caller opts in), "neighbours" the defaults
            (the run directories beside this one, or the study's RDB), or a list of run
            directories, folders of them, journal files and RDB URLs (`--reuse-from`).

    Attributes:
        screens: `Screen` functions run on every new config that is within the analytic budgets,
            before its latency is measured or it is trained (e.g. a latency model's prediction).
    """

    def __init__(self, spec, run_dir: str | os.PathLike | None = None, *,
                 address: str | None = None, trials: int | None = None,
                 on_progress: Callable[[Progress, str | None], None] | None = None,
                 num_cpus: int | None = None, reuse_from: str | list[str] | None = None):
        self.spec = spec
        self.run_dir = spec.run_dir(run_dir).resolve()
        self.target = int(trials if trials is not None else spec.trials)
        if self.target < 1:
            raise SearchError(f"--trials {trials}: must be >= 1")
        self.on_progress = on_progress
        self.executor = Executor(address, num_cpus=num_cpus)
        self.objectives = list(spec.objectives)
        self.budgets = dict(spec.constraints)
        self.screens: list[Screen] = []
        self._stop = False
        self._reuse_strict = False                    # sources named by the user: unreadable = error
        self._reuse_sources = self._sources(reuse_from)
        self.store: _reuse.Store | None = None       # earlier studies' results, once the loop starts
        self._warm: list = []                         # their configs to start from (`_ask_next`)
        self._imported: set[int] = set()              # trial numbers asked for them
        # set when a run opens its study (`run`)
        self.session: Session | None = None
        self.recorder: Recorder | None = None
        self.rungs: Rungs | None = None
        self.evaluations: Evaluations | None = None
        self.pricer: LatencyPricer | None = None
        self.proposals = None             # nas.search.proposals.Proposals, once the loop starts
        self.slots: Slots | None = None
        self.budget: TrialBudget | None = None
        self.weights = WeightsDir(self.run_dir)
        self.queues = Queues()
        self.dedup = Dedup()
        self.report = Reporter(Progress(target=self.target, counts=spec.trials_count),
                               self.objectives, self.budgets, self.queues)
        self._gate = None
        self._wall_mark = self._last_tick = self._last_sync = 0.0

    @property
    def study(self) -> optuna.Study | None:
        return self.session.study if self.session is not None else None

    @property
    def progress(self) -> Progress:
        return self.report.progress

    @property
    def evaluator(self):
        return self.session.evaluator if self.session is not None else None

    @property
    def stopping(self) -> bool:
        """A stop was requested."""
        return self._stop

    # -------------------------------------------------------------------------------- public
    def request_stop(self) -> None:
        """Stop asking; in-flight trials are failed as `interrupted` and re-queued (idempotent)."""
        self._stop = True

    def run(self) -> SearchResult:
        """Run until the trial budget is spent or a stop is requested.

        Raises:
            SearchError: (subclasses DriverBusy, StudyMismatch, CostModelMismatch) one line.
            ExecutorError: Ray could not be started or reached.
        """
        try:     # a new, empty or tool-made folder only: never write over a user's files
            claim_run_dir(self.run_dir, study_file=self.spec.path)
        except RunDirError as e:
            raise SearchError(str(e)) from None
        with DriverLock(self.run_dir):
            self.report.t0 = self._wall_mark = time.monotonic()
            self._open()
            self.executor.start()
            try:
                if self.spec.needs_latency:
                    self.pricer = LatencyPricer(self.spec, self.executor, self.run_dir,
                                                LATENCY_TARGET, _LATENCY_GRACE_S)
                    self.pricer.start()
                interrupted = self._loop()
            finally:
                self._save_wall_time()
                flush_journal(self.session.storage)
                if self.pricer is not None:
                    self.pricer.stop()
                self.executor.shutdown()
            return self._result(interrupted)

    def _open(self) -> None:
        s = self.session = open_session(self.spec, self.run_dir)
        self.spec = s.spec    # a resume may keep stored evaluator settings the file leaves unset
        self.progress.counts = s.trials_count
        self.recorder = Recorder(s.study, self.objectives, self.budgets, s.constraint_names,
                                 s.named_constraints)
        sh = self.spec.successive_halving
        self.rungs = Rungs(list(s.rung_budgets), eta=sh.eta, min_trials=sh.min_trials,
                           signal=sh.signal, metric=self.spec.score_metric or "")
        self.evaluations = Evaluations(self.rungs, self.weights, self.recorder, self.spec.score_metric)

    # ---------------------------------------------------------------------------- main loop
    def _loop(self) -> bool:
        """Adopt what a dead driver left, then turn (`_step`) until the budget is spent (False)
        or a stop is requested (True)."""
        study = self.study
        trials = study.get_trials(deepcopy=False)
        check_latency_device(self.spec, self.pricer.device if self.pricer else None, trials)
        # new trials get params drawn within every exact budget (nas.search.proposals)
        self.proposals = proposals_for(self.spec, len(trials), self.recorder.budgets_in_order,
                                       **(self.pricer.for_proposals() if self.pricer else {}),
                                       named_constraints=self.session.named_constraints)
        study.sampler = self.proposals.sampler
        self.proposals.start(trials)
        nodes = self.executor.nodes()
        self.slots = Slots(self.spec, self.executor, self.queues, self.rungs, self.weights, self.pricer)
        fits = self.slots.plan(nodes)
        self._remember(trials)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        for line in self.report.started(self.executor.mode, nodes, self.slots.parallel,
                                        self.pricer and self.pricer.note, self.session, trials, running):
            self._emit(line)
        self._open_store()
        if self.evaluator is not None:
            self.slots.warm(fits)
        try:
            self._adopt(running)
            if running:      # adoption may have re-queued trials
                self.budget.resync(study.get_trials(deepcopy=False))
            while True:
                if self._stop:
                    self._interrupt()
                    return True
                if not self._step():
                    return False
        except KeyboardInterrupt:
            self._interrupt()
            return True
        except SearchError:
            self._interrupt()
            raise
        except Exception as e:  # noqa: BLE001 - e.g. the Ray cluster went away
            error = crashed(self.run_dir, e)      # its traceback logged first
            with contextlib.suppress(Exception):
                self._interrupt()
            raise error from None

    def _step(self) -> bool:
        """One turn: duplicates whose original finished go on, a freed slot takes a priced trial
        before new ones are asked, then wait a moment for a task. False when all is done."""
        self._release_duplicates()
        self.slots.pump()
        self._fill()
        self.slots.pump()
        if not self.queues.busy() and not self._budget_left():
            return False
        flush_journal(self.session.storage)     # one append per step (nas.search.journal)
        self._collect(timeout=_COLLECT_S)
        self._check_timeouts()
        self._tick()
        return True

    def _remember(self, trials: list[FrozenTrial]) -> None:
        """The stored trials, read once: architectures, rung scores, counts, the budget."""
        self.budget = TrialBudget(self.target, self.session.trials_count, space_size(self.spec.space))
        self.report.open(self.study, self.budget, self.spec.score_metric, trials)
        for t in trials:
            ua = t.user_attrs
            self.dedup.remember(t)
            self.rungs.remember(ua, ua.get("config_hash") or f"#{t.number}")
        self.budget.resync(trials)

    def _budget_left(self) -> bool:
        return not self._stop and self.budget.left()

    def _fill(self) -> None:
        """Ask new trials while there is room (`Slots.room`) and budget is left."""
        while self.slots.room() and self._budget_left():
            trial, proposal = self._ask_next()
            if trial is None:
                break
            self.budget.asked(trial.number)
            self._start_trial(trial, proposal)
            if trial.number not in self._imported:    # a warm start's trial is no draw
                self._count_draw(trial.number)

    def _ask_next(self) -> tuple[optuna.Trial | None, Any]:
        """The one place a new trial is asked for: a queued trial (e.g. a re-queued one) first,
        else one created with the params the proposer drew within every exact budget, so a
        config over one never becomes a trial (nas.search.proposals); with it, its `Proposal`
        (its exact cost priced). None, and asking stops, when no config within the budgets is
        left to draw."""
        if self.budget.waiting:
            return self.study.ask(), None
        if self._warm:                  # an earlier study's result: a trial reused, first
            params, distributions, _ = self._warm.pop(0)
            trial = _optuna.create_running_trial(self.study, params, distributions)
            self._imported.add(trial.number)
            return trial, None
        try:
            return self.proposals.ask(self.study), self.proposals.sampler.last
        except ProposalError as e:
            self.budget.stopped = str(e)
            self._emit(f"stopped asking: {e}")
            return None, None

    def _count_draw(self, number: int) -> None:
        # architectures drawn: the trials' and those the proposer found over a budget
        drawn = len(self.dedup.seen | self.proposals.rejected_architectures)
        self.progress.rejected = self.proposals.describe() or ""
        why = self.budget.draw(self.budget.counts(number), drawn)
        if why:
            self._emit(f"stopped asking: {why}")

    def _collect(self, timeout: float) -> None:
        for kind, lv, result in self.slots.collect(timeout, lambda: self._stop):
            if kind == "alone":        # its set was lost: queued again, to be measured alone
                self._emit(result)
            elif kind == "latency":
                self._latency(lv, self.pricer.measured(lv, result))
            else:
                self._after_eval(lv, result)

    def _check_timeouts(self) -> None:
        """A task past its limit (`Slots.overdue`, cancelled) fails its trial."""
        for kind, lv, limit in self.slots.overdue():
            if kind == "alone":        # a set past its limit: queued again, to be measured alone
                self._emit(limit)          # (here: what to say, naming the set's trials)
            else:
                self._fail(lv, self.pricer.timed_out(limit) if kind == "latency"
                           else f"timeout: evaluation ran longer than {limit:g} s", "")

    # ------------------------------------------------------------------------- one trial
    def _start_trial(self, trial: optuna.Trial, proposal=None) -> None:
        import space as space_pkg

        lv = Live(trial=trial, seed=derived_seed(self.spec.seed, trial.number, 7))
        original = trial.user_attrs.get("requeued_from")
        if isinstance(original, int):    # an interrupted trial run again: same seed, its rungs kept
            lv.resume_from = _optuna.trial_by_number(self.study, original)
            lv.seed = int(lv.resume_from.user_attrs.get("seed", lv.seed))
        self.recorder.set(trial, "driver", self.session.driver_id)
        try:
            config = self.spec.space.suggest(trial)
        except (space_pkg.SpaceError, ValueError) as e:
            self._fail(lv, f"invalid config: {folded(e)[:240]}", "")
            return
        if proposal is not None and proposal.config == config:   # priced when it was drawn
            lv.priced = proposal.metrics
        self._begin(lv, config)

    def _begin(self, lv: Live, config) -> None:
        """A sampled (or adopted) config: recorded, then 2. deduplicated."""
        lv.config, lv.chash = config, config.config_hash()
        self.dedup.seen.add(lv.chash)
        self.recorder.update(lv.trial, {
            "config": config.to_dict(), "config_hash": lv.chash, "summary": config.summary(),
            "resolution": list(config.resolution), "seed": lv.seed,
            "evaluator": self.spec.evaluator.name if self.evaluator is not None else None})
        self._claim(lv)

    def _claim(self, lv: Live) -> None:
        """2. Never pay twice for one architecture: a finished one is reused, a live one waited
        for (parked, released when it finishes); else this trial evaluates it."""
        original = self.dedup.index.get(lv.chash)
        if original is not None:
            self._reuse(lv, _optuna.trial_by_number(self.study, original))
        elif lv.chash in self.dedup.live:
            self.queues.parked.setdefault(lv.chash, []).append(lv)
        else:
            self.dedup.live[lv.chash] = lv
            self._price(lv)

    def _release_duplicates(self) -> None:
        """Duplicates whose original finished: its result is reused, or (it failed) they go on."""
        while self.queues.released:
            self._claim(self.queues.released.popleft())

    def _price(self, lv: Live) -> None:
        """3. The analytic cost (checked against fvcore on a sample), the budgets, the screens;
        4. latency before training: the device's store, else the measuring worker's queue."""
        cost = price(lv.config, wants_check(lv.number, self.spec.fvcore_check_every), lv.priced)
        self.recorder.update(lv.trial, cost.metrics)
        if cost.flops_fvcore is not None:
            self.recorder.set(lv.trial, "flops_fvcore", cost.flops_fvcore)
        if cost.problems:
            msg = cost.mismatch(lv.number)
            self._fail(lv, msg, "")
            raise CostModelMismatch(msg + f" (config {lv.chash}); constraints would be wrong, "
                                    "so the study stops")
        lv.metrics.update(cost.metrics)
        if self._over_budget(lv):
            return
        estimated = screened(self.screens, self.budgets, lv.config)   # budgets not known yet
        if estimated:
            self._infeasible(lv, [f"{n} {_fmt(n, v)} (estimated) > {_fmt(n, self.budgets[n])}"
                                  for n, v in estimated.items()], estimated=estimated)
            return
        if self.pricer is not None:
            self._latency(lv, self.pricer.place(lv))
        else:
            self._to_evaluation(lv)

    def _latency(self, lv: Live, step: LatencyStep) -> None:
        """4. Apply the latency pricer's decision on `lv` (`LatencyPricer.place`, `.measured`)."""
        self.recorder.update(lv.trial, step.attrs)
        if step.action == FAILED:
            self._fail(lv, step.reason, step.error)
        elif step.action == MEASURE:
            self.queues.latency.append(lv)
        elif step.action == AGAIN:
            self._emit(f"#{lv.number} latency {step.reading['latency_ms']:.4g} ms is {step.reason}: "
                       "measuring it again")
            self.queues.latency.appendleft(lv)
        elif step.action == OVER:            # neither measured nor trained
            lv.metrics["latency_ms"] = step.predicted_ms     # its constraint value: an estimate
            self._infeasible(lv, [step.reason])
        else:
            self.recorder.latency(lv.trial, step.reading, step.source)
            lv.metrics["latency_ms"] = float(step.reading["latency_ms"])
            if not self._over_budget(lv):
                self._to_evaluation(lv)

    def _over_budget(self, lv: Live) -> bool:
        """PRUNED `infeasible` when the metrics known so far break a budget."""
        over = broken(lv.metrics, self.budgets)
        if over:
            self._infeasible(lv, over)
        return bool(over)

    def _to_evaluation(self, lv: Live) -> None:
        if self.evaluator is None:      # nothing to train: every objective is known already
            self._complete(lv)
            return
        earlier = self.store.get(lv.chash) if self.store is not None else None
        if earlier is not None:         # an earlier study measured it so: reused, not trained
            self._reuse_earlier(lv, earlier)
            return
        gated = self._gated(lv)
        if gated is not None:           # proxy_gate: not worth training (nas.gate)
            self.recorder.constraints(lv.trial, lv.metrics)
            self._finish(lv, TrialState.PRUNED, reason=gated)
        else:
            step = self.evaluations.continued(lv)   # from a stored trial's last finished rung
            if step is None:
                self.queues.ready.append(lv)
            else:
                self._next_rung(lv, step)

    def _gated(self, lv: Live) -> str | None:
        """`proxy_gate`: score the config's zero-cost proxy; why not to train it, or None."""
        if self.spec.proxy_gate is None or "gate_score" in lv.trial.user_attrs:   # off, or decided
            return None
        if self._gate is None:
            from .gate import ProxyGate

            self._gate = ProxyGate.for_study(self.spec, self.study.get_trials(deepcopy=False))
        score, reason = self._gate.check(lv.config, lv.seed)
        self.recorder.set(lv.trial, "gate_score", score)
        return reason

    # ------------------------------------------------------------------------------ evaluation
    def _after_eval(self, lv: Live, result: dict) -> None:
        self._next_rung(lv, self.evaluations.evaluated(lv, result))

    def _next_rung(self, lv: Live, step: Step) -> None:
        """Apply what a finished rung means (`nas.search.evaluation`): fail, complete, prune, or
        continue to the next rung (started trials first)."""
        if step.said:
            self._emit(step.said)
        if step.action == FAIL:
            self._fail(lv, step.reason, step.error)
        elif step.action == COMPLETE:
            self._complete(lv)
        elif step.action == CONTINUE:
            lv.rung += 1
            self.queues.ready.appendleft(lv)
            if step.reason:      # (unsaid: a continued rung that goes on unranked)
                self._emit(f"#{lv.number} continues to {self.rungs.budgets[lv.rung]} epochs ({step.reason})")
        else:
            self.recorder.constraints(lv.trial, lv.metrics)
            self._finish(lv, TrialState.PRUNED, reason=step.reason)

    # ------------------------------------------------------------------------------- endings
    def _complete(self, lv: Live) -> None:
        values = [lv.metrics[o] for o in self.objectives]
        self.recorder.constraints(lv.trial, lv.metrics)
        if self.evaluator is None:
            self.recorder.set(lv.trial, "fidelity", 1.0)
        self._finish(lv, TrialState.COMPLETE, values)

    def _infeasible(self, lv: Live, over: list[str], estimated: dict | None = None) -> None:
        """PRUNED before training, with every known (or estimated) constraint value."""
        if estimated:
            self.recorder.set(lv.trial, "estimated", estimated)
        self.recorder.constraints(lv.trial, lv.metrics, extra=estimated)
        self.recorder.set(lv.trial, "infeasible", True)
        self._finish(lv, TrialState.PRUNED, reason="over budget before training: " + ", ".join(over))

    def _fail(self, lv: Live, reason: str, error: str, *, keep_files: bool = False) -> None:
        """FAIL with a reason; its weights files go (nobody reads them) unless `keep_files`
        (an interrupted trial: its re-queued copy continues from them)."""
        if lv.chash and not keep_files:
            self.weights.delete(lv.number, lv.chash)
        self._finish(lv, TrialState.FAIL, reason=" ".join(str(reason).split())[:300], error=error)

    def _reuse(self, lv: Live, original: FrozenTrial) -> None:
        self.recorder.copy(lv.trial, original.user_attrs, skip=set(IDENTITY_ATTRS) | {"reused_from"})
        self.recorder.set(lv.trial, "reused_from", original.number)
        self.recorder.copy_constraints(lv.trial, named_constraints(original, self.recorder.budgets_in_order))
        self._finish(lv, original.state, original.values if original.state == TrialState.COMPLETE else None,
                     reused=True)

    def _reuse_earlier(self, lv: Live, result: _reuse.Result) -> None:
        """COMPLETE with an earlier study's result (`nas.search.reuse`): its score and evaluation
        records, this study's own cost, latency and constraints; never counted as a training."""
        self.recorder.update(lv.trial, result.attrs)
        self.recorder.set(lv.trial, _reuse.ATTR, result.origin)
        lv.metrics[self.spec.score_metric] = result.score
        self._complete(lv)

    def _finish(self, lv: Live, state: TrialState, values: list[float] | None = None, *,
                reason: str | None = None, error: str = "", reused: bool = False) -> None:
        """Tell (through the recorder), then the books: budget, duplicates, files, progress."""
        final = self.recorder.finish(lv.trial, state, values, reason=reason, error=error)
        if self.proposals is not None:
            self.proposals.observe(final)
        self.budget.update(final)
        if not reused:
            self.dedup.finished(lv, final.state, self.queues)
            if final.state in FINISHED and lv.chash:
                self.weights.drop_state(lv.number, lv.chash)
        self.report.finished(final, counts(final, self.session.trials_count), self.on_progress)

    # ------------------------------------------------------------------ earlier studies' results
    def _sources(self, reuse_from) -> list:
        """Where earlier results are looked for, checked now (a bad `--reuse-from`: one line)."""
        if reuse_from is None:
            return []
        named = None if reuse_from == "neighbours" else [reuse_from] if isinstance(reuse_from, str) \
            else list(reuse_from)
        try:
            sources = _reuse.find_sources(self.run_dir, self.spec.storage, named)
        except _reuse.ReuseError as e:
            raise SearchError(str(e)) from None
        self._reuse_strict = named is not None
        return sources

    def _open_store(self) -> None:
        """Read the earlier studies measured as this one (`nas.search.reuse`), and queue the
        configs of their results within this study's budgets as its first trials (a warm start)."""
        if not self._reuse_sources or self.evaluator is None:
            return
        attrs = self.study.user_attrs
        own = (self.session.storage_label, self.spec.name)
        try:
            self.store = _reuse.open_store(self._reuse_sources,
                                           _reuse.measurement(attrs.get("evaluator"), attrs.get("seed")),
                                           self.spec.score_metric, own=own, strict=self._reuse_strict)
        except _reuse.ReuseError as e:
            raise SearchError(str(e)) from None
        self._warm = _reuse.warm_start(self.store, self.spec.space, self.proposals.proposer.pricer,
                                       set(self.dedup.seen))
        if self.store.studies or self.store.skipped:
            self._emit(self.store.describe() + f"; {len(self._warm)} within this study's budgets "
                       "start it")

    # ---------------------------------------------------------------------- resume and stop
    def _adopt(self, running: list[FrozenTrial]) -> None:
        """RUNNING trials left by a dead driver of this run directory."""
        from overlock import OverLoCKConfig

        for ft, seed in left_running(self.spec, self.session.driver_id, running):
            lv = Live(trial=_optuna.resume_trial(self.study, ft), seed=seed)
            if "config" not in ft.user_attrs:
                self._requeue(lv, ft, "interrupted before its config was recorded")
                continue
            config = OverLoCKConfig.from_dict(ft.user_attrs["config"])
            self._emit(f"#{ft.number} adopted (left RUNNING by a previous driver)")
            # cost, budgets and latency are checked again (analytic, cached); training continues
            # from its last finished rung when that rung's weights were kept
            lv.resume_from = ft
            self._begin(lv, config)

    def _requeue(self, lv: Live, ft: FrozenTrial, reason: str) -> None:
        """FAIL it (superseded, not counted) and queue its params to run first next time."""
        self.recorder.set(lv.trial, "superseded", True)
        self._fail(lv, reason, "", keep_files=True)
        self.recorder.requeue(ft.params, ft.number)

    def _interrupt(self) -> None:
        """Stop: every trial this driver holds is failed as interrupted and re-queued."""
        with _sigint_ignored():
            for handle in self.queues.handles():
                self.executor.cancel(handle)
            for lv in self.queues.drain():
                ft = self.recorder.stored(lv.trial)
                if ft.state == TrialState.RUNNING:
                    self._requeue(lv, ft, "interrupted")

    # ----------------------------------------------------------------------------- progress
    def _emit(self, line: str | None) -> None:
        self.report.emit(line, self.on_progress)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick < 1.0:
            return
        self._last_tick = now
        if self.spec.storage and now - self._last_sync >= _SHARED_RESYNC_S:
            self._last_sync = now     # other drivers may add trials to a shared study
            self.budget.resync(self.study.get_trials(deepcopy=False))
        self._emit(None)
        if now - self._wall_mark >= 30:
            self._save_wall_time()

    def _save_wall_time(self) -> None:
        if self.session is None:
            return
        now = time.monotonic()
        save_wall_time(self.study, now - self._wall_mark,
                       self.progress.infeasible if self.report.tally is not None else None)
        self._wall_mark = now

    def _result(self, interrupted: bool) -> SearchResult:
        self.budget.resync(self.study.get_trials(deepcopy=False))   # re-queued trials included
        return self.report.result(self.run_dir, self.spec.name, self.session.storage_label, interrupted)


# ======================================================================================= helpers
@contextlib.contextmanager
def _sigint_ignored():
    """Ctrl-C ignored while a stop re-queues the trials (in the main thread, where it lands)."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
