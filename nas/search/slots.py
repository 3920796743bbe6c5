"""Slots: the queued work onto the executor, and back.

`Slots` is the executor's side of the driver's loop: how many trials train at once (`plan`), the
training workers' warm-up, starting queued work (`pump`: the configs waiting for their latency,
up to `MEASURE_SET` measured together on the measuring worker, one set at a time so each has its
device alone; evaluations while slots are free), the tasks that finished (`collect`) and those
past their time limit (`overdue`). A set measured together that produced no readings at all (its
worker died, or the driver stopped it past its time) goes back to the queue, each config to be
measured alone, so one config cannot cost the others their readings. It decides nothing about a
trial and writes nothing to Optuna: each finished or stopped task goes back to the driver, which
applies it (`nas.engine.SearchEngine`).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from nas.executor import TaskLost

from .ledger import Live, Queues
from .pricing import MEASURE_SET, trial_gpus
from .session import SearchError
from .weights import stem

EVAL_TARGET = "nas.worker:run_evaluation"
WARM_S = 120.0           # evaluations wait at most this long for the training workers' warm-up
RESEND = 2               # times one config's measurement is sent again to an unavailable worker


class Slots:
    """Where the driver's queued work runs.

    Args:
        spec: the study; executor: the started `nas.executor.Executor`.
        queues: the driver's `Queues`; rungs: its `Rungs` (the epochs of each rung).
        weights: the run directory's `WeightsDir` (a continued trial's files go with it).
        pricer: the `LatencyPricer`, or None when the study needs no latency.
    """

    def __init__(self, spec, executor, queues: Queues, rungs, weights, pricer=None):
        self.spec, self.executor, self.queues = spec, executor, queues
        self.rungs, self.weights, self.pricer = rungs, weights, pricer
        self.parallel = 0                  # trials trained at once
        self.trial_gpus = 0.0              # GPUs one trial takes
        self._warming: list = []
        self._warm_until = 0.0

    def plan(self, nodes: list[dict]) -> int:
        """How many trials train at once (`parallel`, else as many as fit); returns how many fit.

        Raises:
            SearchError: no Ray node can run one trial (its task would wait forever).
        """
        self.trial_gpus = gpus = trial_gpus(self.spec, nodes)
        held = self.pricer.held if self.pricer is not None else {}
        fits = self.executor.capacity(self.spec.resources.cpus, gpus, held=held)
        if fits == 0:
            have = ", ".join(f"{n['ip']}: {n['cpus']:g} CPUs {n['gpus']:g} GPUs" for n in nodes)
            raise SearchError(f"{self.spec.label}: resources: one trial needs {self.spec.resources.cpus:g} "
                              f"CPUs and {gpus:g} GPUs (device {self.spec.device}), but no Ray node "
                              f"has them ({have})")
        self.parallel = self.spec.parallel or fits
        return fits

    def warm(self, fits: int) -> None:
        """Start the training workers while the measuring worker prices the first configs;
        evaluations wait for them (at most `WARM_S`), so the slots start together, not one
        process start-up apart."""
        self._warming = self.executor.warm(min(self.parallel, fits), self.spec.resources.cpus,
                                           self.trial_gpus)
        self._warm_until = time.monotonic() + WARM_S

    def room(self) -> bool:
        """A new trial may be asked: slots are free (with a measuring worker, up to
        `latency.ahead` more, so their latency is priced before a slot frees)."""
        ahead = self.pricer.ahead(self.parallel) if self.pricer is not None else 0
        return self.queues.occupancy() < self.parallel + ahead

    def pump(self) -> None:
        """Start queued work: the next set of measurements on the measuring worker (every config
        waiting for its latency, up to `MEASURE_SET`), and evaluations while slots are free.
        Neither waits for the other; a trial waits only for its own latency."""
        q = self.queues
        if q.latency and not q.running("latency"):
            lives = q.next_to_measure(MEASURE_SET)
            q.start_measuring(lives, self.pricer.submit([lv.config for lv in lives]), time.monotonic())
        if self._warming:
            self._warming = [] if time.monotonic() > self._warm_until else \
                [h for h in self._warming if h not in self.executor.wait(self._warming, timeout=0)]
            if self._warming:
                return
        evals = q.running("eval")
        while q.ready and evals < self.parallel:
            self._submit_eval(q.next_ready())
            evals += 1

    def _submit_eval(self, lv: Live) -> None:
        e = self.spec.evaluator
        handle = self.executor.submit(
            EVAL_TARGET, e.name, e.settings, lv.config.to_dict(),
            budget_epochs=self.rungs.budgets[lv.rung], device=self.spec.device, seed=lv.seed,
            weights_name=stem(lv.number, lv.chash),
            resume_files=self.weights.read(lv.number, lv.chash) if lv.rung > 0 else None,
            cpus=self.spec.resources.cpus, gpus=self.trial_gpus, max_retries=self.spec.max_retries)
        self.queues.start(lv, handle, "eval", time.monotonic())

    def collect(self, timeout: float, stopping: Callable[[], bool]) -> Iterator[tuple[str, Live, Any]]:
        """(kind, live, result) of each task that finished within `timeout`, out of flight, one
        at a time (the driver applies each before the next is read); a set measured together
        gives one ("latency", live, its own reading) per config. A task lost while `stopping()`
        stays in flight: the stop re-queues its trial. A set that produced no readings goes back
        to the queue (`_measure_alone`), as one ("alone", its first live, what to say)."""
        for handle in self.executor.wait(self.queues.handles(), timeout=timeout):
            try:
                result = self.executor.result(handle)
            except TaskLost as e:
                if stopping():   # lost to the stop itself (Ctrl-C reaches Ray's processes too)
                    continue
                if e.transient and self._resend(handle):
                    continue
                result = {"ok": False, "reason": e.reason, "error": e.error}
            kind, lives = self.queues.take(handle)
            if kind != "latency":
                yield kind, lives[0], result
            elif len(lives) > 1 and isinstance(result, dict):     # the task itself was lost
                yield from self._measure_alone(lives, result.get("reason") or "no result")
            else:
                for lv, reading in zip(lives, self.pricer.readings([lv.config for lv in lives], result)):
                    yield kind, lv, reading

    def _resend(self, handle) -> bool:
        """One config's measurement found its worker unavailable: sent while it restarted after
        a crash (it never ran), or it crashed the worker itself. It goes first in the queue
        again, at most `RESEND` times (a set goes back one config at a time, `_measure_alone`)."""
        lives = self.queues.measuring.get(handle)
        if lives is None or len(lives) > 1 or lives[0].resent >= RESEND:
            return False
        self.queues.take(handle)
        for lv in reversed(lives):
            lv.resent += 1
            self.queues.latency.appendleft(lv)
        return True

    def _measure_alone(self, lives: list[Live], why: str) -> Iterator[tuple[str, Live, str]]:
        """A set measured together that produced no readings: each config first in the queue,
        to be measured alone (the one that broke the set then fails by itself)."""
        for lv in reversed(lives):
            lv.alone = True
            self.queues.latency.appendleft(lv)
        yield "alone", lives[0], self.pricer.lost_set(lives, why)     # said once, for the set

    def overdue(self) -> Iterator[tuple[str, Live, float]]:
        """(kind, live, limit) of each task past its limit, cancelled and out of flight: a
        measurement stuck past `latency.timeout_s` (in native code: the worker's own timer could
        not stop it; cancelling restarts the measuring worker), an evaluation past
        `trial_timeout_s` (its earlier rungs' time included). A set measured together past its
        limit goes back to the queue to be measured alone, as one ("alone", its first live, what to say)."""
        now = time.monotonic()
        eval_limit = self.spec.trial_timeout_s or None
        for handle, lv in list(self.queues.inflight.items()):
            if eval_limit is None or now - lv.started + lv.eval_s <= eval_limit:
                continue
            self.executor.cancel(handle)
            kind, _ = self.queues.take(handle)
            yield kind, lv, eval_limit
        for handle, lives in list(self.queues.measuring.items()):
            limit = self.pricer.timeout_s(len(lives))
            if limit is None or now - lives[0].started <= limit:
                continue
            self.executor.cancel(handle)
            kind, _ = self.queues.take(handle)
            if len(lives) > 1:
                yield from self._measure_alone(lives, f"no result after {limit:g} s")
            else:
                yield kind, lives[0], limit
