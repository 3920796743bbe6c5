"""What a config costs before it is trained: its exact cost and its latency.

- `price(config, check)`: params, FLOPs and memory from the analytic cost model, cross-checked
  against fvcore and the built model on a sample of trials (a mismatch stops the study: every
  constraint would be wrong).
- `LatencyPricer`: latency from the device's store (shared by every study on that device, keyed
  by architecture, device string, batch, resolution, dtype, memory format), else measured by the
  measuring worker (a Ray actor holding the latency device alone), the configs queued for it
  measured together (up to `MEASURE_SET` at a time, their rounds interleaved), with a timeout; a reading the study's latency model contradicts, or one within `latency.recheck_near`
  of the budget, is measured once more and the faster kept; the model's verdict may spare
  measuring a config far over the budget. Its policy for one trial (`place`, then `measured`
  for each reading) is a `LatencyStep`: what to record and what the trial does next.

Nothing here writes to Optuna: each step returns what it learned, and the driver records it
(`nas.search.recorder`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from nas.executor import TaskLost, wants_gpu
from nas.latency.protocol import GROUP
from nas.storage import LATENCY_RECORD_NAME, format_value as _fmt

from .contract import LATENCY_REASON, MEASURED_LATENCY_REASON, STORED_LATENCY_REASON
from .session import SearchError

DESCRIBE_TARGET = "nas.worker:describe_device"
WORKER_START_S = 300.0   # for the measuring worker to be placed and answer (or latency.timeout_s)
# Configs the measuring worker measures together, their rounds interleaved: the protocol's group
# (nas.latency.protocol is torch-free). Protocol 2 does not idle, so a set costs about the sum of
# its configs' forwards; measuring them together shares one yardstick, one call and one stretch
# of the machine's load, so the readings of a set are taken under the same conditions.
MEASURE_SET = GROUP


def measuring_limit_s(timeout_s: float, configs: int) -> float:
    """How long one measuring call of `configs` configs may take in all (`nas.worker:run_latencies`):
    `timeout_s` per config, and for a set as much again, so that a set whose one config fails
    or hangs can be halved and measured again until that config is alone."""
    return timeout_s * configs * (2 if configs > 1 else 1)


# ------------------------------------------------------------------------------- exact cost
@dataclass(frozen=True)
class Cost:
    metrics: dict                   # {flops, flops_paper, params, memory_mb}: the study's metrics
    flops_fvcore: int | None = None  # fvcore's count, when cross-checked
    problems: tuple = ()            # where the analytic model and fvcore disagree

    def mismatch(self, number: int) -> str:
        """Why the study stops: the analytic model and fvcore disagree on trial `number`."""
        return f"cost model disagrees with fvcore on trial {number}: {'; '.join(self.problems)}"


def price(config, check: bool, metrics: dict | None = None) -> Cost:
    """The config's analytic cost; with `check`, fvcore's count and the built model's parameters
    compared with it (torch is imported only then). `metrics`: the cost a proposer priced the
    config at already (`space.complexity(config).as_metrics()`, `Proposal.metrics`), so an
    unchecked trial is priced once; the check needs the training parameters, so it prices again."""
    import space

    cost = None
    if metrics is None or check:
        cost = space.complexity(config)
        metrics = cost.as_metrics()
    metrics = {k: (float(v) if k == "memory_mb" else int(v)) for k, v in metrics.items()}
    if not check:
        return Cost(metrics)
    from overlock import create_model
    from overlock.flops import count_macs

    model = create_model(config)
    counted = count_macs(model, config.resolution, batch=1, in_chans=config.in_chans)
    n_params = sum(p.numel() for p in model.parameters())
    problems = []
    if counted.total != cost.flops:
        problems.append(f"flops analytic {cost.flops} != fvcore {counted.total}")
    if counted.paper != cost.flops_paper:
        problems.append(f"flops_paper analytic {cost.flops_paper} != fvcore {counted.paper}")
    if n_params != cost.params:
        problems.append(f"params analytic {cost.params} != model {n_params}")
    return Cost(metrics, int(counted.total), tuple(problems))


def screened(screens, budgets: dict, config) -> dict:
    """{budget: estimated value} of the budgets the `screens` (`nas.engine.Screen`) expect
    `config` to break, the first screen's estimate of each."""
    out = {}
    for screen in screens:
        for name, value in (screen(config) or {}).items():
            if name in budgets and name not in out and float(value) > budgets[name]:
                out[name] = float(value)
    return out


def wants_check(number: int, every: int) -> bool:
    """fvcore cross-checks trial 0 and every `fvcore_check_every`-th trial (0: trial 0 only)."""
    return number == 0 or bool(every and number % every == 0)


# ---------------------------------------------------------------------------------- latency
def verdict_attrs(verdict: dict) -> dict:
    """The latency model's view of a config, recorded on every trial once a model exists."""
    margin = verdict["margin"]
    return {"latency_predicted_ms": round(verdict["predicted_ms"], 4),
            "latency_predicted_low_ms": round(verdict["low_ms"], 4),
            "latency_model_margin": round(margin, 4) if math.isfinite(margin) else None,
            "latency_model_n": verdict["n"]}


def predicted_over(verdict: dict, budget: float) -> str:
    """Why a config the model puts over the budget by more than its margin is not measured."""
    return (f"latency_ms {_fmt('latency_ms', verdict['predicted_ms'])} predicted, at least "
            f"{_fmt('latency_ms', verdict['low_ms'])} within the model's margin of "
            f"{verdict['margin']:.1%} > {_fmt('latency_ms', budget)} (not measured)")


def recheck(ms: float, verdict: dict | None, budget: float | None, near: float | None) -> str | None:
    """Why a first latency reading of `ms` should be measured once more, or None: the study's
    latency model (with a finite margin) disagrees with it by more than that margin and 10 %, or
    it lies within `near` of the latency budget. Interference only ever adds time."""
    v = verdict
    if v and math.isfinite(v["margin"]) and v["predicted_ms"] > 0:
        off = ms / v["predicted_ms"] - 1.0
        if abs(off) > max(v["margin"], 0.10):
            return (f"{off:+.0%} off the model's {v['predicted_ms']:.4g} ms "
                    f"(margin {v['margin']:.0%})")
    if budget and near and abs(ms / budget - 1.0) <= near:
        return f"within {near:.0%} of the {budget:.4g} ms budget"
    return None


# what the driver does with a trial once its latency step is decided (`LatencyStep.action`)
KNOWN = "known"      # record `reading` (from `source`), check the budgets, evaluate within them
MEASURE = "measure"  # queue it for the measuring worker
AGAIN = "again"      # a first reading to measure once more, first in the queue (`reason`: why)
OVER = "over"        # the model puts it over the budget by more than its margin: PRUNED, not measured
FAILED = "failed"    # the measurement failed: FAIL with `reason` and `error`


@dataclass(frozen=True)
class LatencyStep:
    """The latency pricer's decision on one trial (`LatencyPricer.place`, `.measured`), which the
    driver applies: `attrs` are recorded first (in order), then `action` (see the constants)."""

    action: str
    attrs: dict = field(default_factory=dict)   # user attrs of the trial to record
    reading: dict | None = None   # KNOWN: the latency to record
    source: str = ""              # KNOWN: where `reading` came from (measured, store)
    predicted_ms: float = 0.0     # OVER: the model's prediction, the trial's latency estimate
    reason: str = ""
    error: str = ""


def _first_attrs(first: dict, why: str) -> dict:
    """A first reading measured once more, and why (recorded beside the kept one)."""
    return {"latency_first_ms": round(float(first["latency_ms"]), 4), "latency_recheck": why}


def _wants(want: dict) -> str:
    """The measuring worker's request, for messages: "1 CPU, 1 GPU, resource t4_box"."""
    parts = [f"{want['cpus']:g} CPU{'s' if want['cpus'] != 1 else ''}"]
    if want.get("gpus"):
        parts.append(f"{want['gpus']:g} GPU")
    if want.get("resource"):
        parts.append(f"resource {want['resource']}")
    parts += [f"label {k}={v}" for k, v in (want.get("labels") or {}).items()]
    return ", ".join(parts)


class LatencyPricer:
    """The latency of a study's configs, on the study's latency device.

    Args:
        spec: the study.
        executor: the started `nas.executor.Executor`.
        run_dir: where this study's own record of the latencies it used is kept.
        target: the measuring function (`module:function`, normally `nas.worker:run_latency`).
        grace_s: past `latency.timeout_s`, the driver restarts a measuring worker stuck in native code.
    """

    def __init__(self, spec, executor, run_dir: Path, target: str, grace_s: float):
        self.spec, self.executor, self.run_dir = spec, executor, Path(run_dir)
        self.target, self.grace_s = target, grace_s
        self.settings = spec.latency
        self.budget = spec.constraints.get("latency_ms")
        self.measurer = None
        self.device: str | None = None     # the device string latencies are measured on
        self.threads = None
        self.held: dict = {}               # node id -> resources the measuring worker holds for good
        self.note: str | None = None       # said once at the start
        self.store = self.record = self.predictor = None
        self.probed: dict[str, dict] = {}  # config hash -> a reading made before it was a trial

    # -------------------------------------------------------------------------- start, stop
    def start(self) -> None:
        """Start the measuring worker, learn from it the device string of its latencies, and
        open that device's store (read first), the latency model and this run's record."""
        from nas.latency.store import LatencyCache, device_store

        self._start_measurer()
        self.store = device_store(self.device)
        self.predictor = self._open_predictor()
        self.record = LatencyCache(str(self.run_dir / LATENCY_RECORD_NAME))

    def stop(self) -> None:
        if self.measurer is not None:
            self.measurer.stop()

    def _start_measurer(self) -> None:
        """A Ray actor on the latency device, holding a GPU (or `cpus` cores) alone. When that
        would leave no training slot (one GPU), measurements run as tasks with the same
        resources instead, between evaluations."""
        s, label = self.settings, self.spec.label
        nodes = self.executor.nodes()
        device = s.device or self.spec.device
        want = dict(cpus=float(s.cpus), gpus=1.0 if wants_gpu(device, nodes) else 0.0,
                    resource=s.resource, labels=s.node_labels)
        problem = self.executor.placeable(**want)
        if problem:
            raise SearchError(f"{label}: latency: the measuring worker needs {_wants(want)}, but {problem}")
        self.threads = s.threads or s.cpus
        measurer = self.executor.measurer(**want, dedicated=True)
        info = self._describe(measurer, device, want)
        held = {info["node"]: {"cpus": want["cpus"], "gpus": want["gpus"]}}
        if self.executor.capacity(self.spec.resources.cpus, trial_gpus(self.spec, nodes), held=held) == 0:
            measurer.stop()
            measurer = self.executor.measurer(**want, dedicated=False)
            info, held = self._describe(measurer, device, want), {}
            self.note = (f"latency: no training slot would be left beside a dedicated "
                         f"measuring worker ({_wants(want)}); each measurement takes them "
                         "when free, between evaluations")
        self.measurer, self.held = measurer, held
        self.device = info["device_string"]

    def _describe(self, measurer, device: str, want: dict) -> dict:
        """Ask the measuring worker what it measures on (only workers touch CUDA, never the driver)."""
        limit = max(self.settings.timeout_s, WORKER_START_S)
        handle = measurer.submit(DESCRIBE_TARGET, device, self.threads, threads=self.threads,
                                 max_retries=self.spec.max_retries)
        try:
            if not self.executor.wait([handle], timeout=limit):
                raise TaskLost(f"it did not start within {limit:g} s (is the cluster busy?)")
            info = self.executor.result(handle)
        except TaskLost as e:
            info = {"ok": False, "reason": e.reason}
        if not info.get("ok"):
            measurer.stop()
            raise SearchError(f"{self.spec.label}: latency: the measuring worker ({_wants(want)}, "
                              f"device {device}) failed: {info.get('reason')}")
        return info

    def _open_predictor(self):
        """`latency.model` (auto or a file): predictions that spare measuring configs far over
        the latency budget (`nas.latency.predictor`)."""
        s = self.settings
        if not s.model:
            return None
        from nas.latency.predictor import LatencyPredictor, LatencyPredictorError

        source = s.model
        if source != "auto" and not Path(source).is_absolute() and self.spec.path is not None:
            source = str(Path(self.spec.path).parent / source)
        try:
            return LatencyPredictor(source, self._settings(), self.store, self.budget)
        except LatencyPredictorError as e:
            raise SearchError(f"{self.spec.label}: {e}") from None

    # ------------------------------------------------------------------------------ pricing
    def _settings(self, device: str | None = None) -> dict:
        """The study's measurement settings on `device` (default: the measuring worker's)."""
        from nas.latency.store import measurement_settings

        s = self.settings
        return measurement_settings(device or self.device, batch=s.batch, dtype=s.dtype,
                                    channels_last=s.channels_last, threads=self.threads)

    def _key(self, config, device: str | None = None) -> str:
        """The store key of `config`'s reading at the study's settings on `device`."""
        from nas.latency.store import store_key

        return store_key(config, self._settings(device))

    def lookup(self, config) -> dict | None:
        """A latency known already: the device store first (every study on this device), then
        this run's own record (given back to a store that was cleared)."""
        if self.record is None or self.device is None:
            return None
        found = self.store.get(self._key(config))
        if found is None:
            found = self.record.get(self._key(config))
            if found is not None:
                self.store.put(self._key(config), found)
        elif self.record.get(self._key(config)) is None:
            self.record.put(self._key(config), found)
        return found

    def predict(self, config) -> dict | None:
        """The latency model's verdict on `config`, or None without a model."""
        return self.predictor.judge(config) if self.predictor is not None else None

    def submit(self, configs: list):
        """Start measuring `configs` together on the measuring worker (their rounds interleaved);
        returns the handle, whose result is one reading per config, in their order."""
        s = self.settings
        return self.measurer.submit(
            self.target, [c.to_dict() for c in configs], device=s.device or self.spec.device,
            latency=s.model_dump(), num_threads=self.threads,
            limit_s=measuring_limit_s(s.timeout_s, len(configs)),
            threads=self.threads, max_retries=self.spec.max_retries)

    def readings(self, configs: list, result) -> list[dict]:
        """One reading per config from a measuring task's `result` (a list), or the task's failure
        for each (a dict: the task itself failed, e.g. its worker died)."""
        if isinstance(result, list) and len(result) == len(configs):
            return result
        if isinstance(result, dict):
            return [result] * len(configs)
        return [{"ok": False, "reason": f"the measuring worker returned {type(result).__name__} "
                 f"for {len(configs)} configs", "error": ""}] * len(configs)

    # -------------------------------------------------------------------- one trial's policy
    def place(self, lv) -> LatencyStep:
        """A new trial's latency (`lv`: its `nas.search.ledger.Live`; its `verdict` is set): read
        before it became a trial (`measure_now`), or from the store, else to be measured, or
        spared on the model's verdict (over the budget by more than its margin)."""
        probed = self.probed.pop(lv.chash, None)
        known = self.lookup(lv.config)
        # the prediction made before it was measured (a probed config's model may know it now)
        verdict = lv.verdict = probed["verdict"] if probed else self.predict(lv.config)
        attrs = verdict_attrs(verdict) if verdict else {}   # on every trial: predicted vs measured
        if probed is not None:           # measured for this trial just before it was created
            if probed["first"] is not None:
                attrs.update(_first_attrs(probed["first"], probed["why"]))
            return LatencyStep(KNOWN, attrs, probed["result"], "measured")
        if known is not None:
            return LatencyStep(KNOWN, attrs, known, "store")
        if verdict and verdict["skip"]:
            return LatencyStep(OVER, {**attrs, "latency_source": "predicted"},
                               predicted_ms=verdict["predicted_ms"],
                               reason=predicted_over(verdict, self.budget))
        return LatencyStep(MEASURE, attrs)

    def measured(self, lv, result: dict) -> LatencyStep:
        """A reading of `lv`'s latency from the measuring worker. Interference only ever adds
        time: a reading the model contradicts, or one so close to the budget that noise decides
        its side, is measured once more (`lv.first_latency` keeps it) and the faster kept."""
        if not result.get("ok"):
            return LatencyStep(FAILED, reason=f"latency: {result.get('reason')}",
                               error=result.get("error", ""))
        why = self.recheck(result, lv.verdict) if lv.first_latency is None else None
        if why is not None:
            lv.first_latency = result
            return LatencyStep(AGAIN, _first_attrs(result, why), reading=result, reason=why)
        if lv.first_latency is not None:
            result = min(lv.first_latency, result, key=lambda r: float(r["latency_ms"]))
        self.learned(lv.config, result)
        return LatencyStep(KNOWN, reading=result, source="measured")

    def timed_out(self, limit: float) -> str:
        """Why a measurement stopped by the driver after `limit` s failed its trial."""
        return (f"latency: timeout: no result after {limit:g} s (latency.timeout_s "
                f"{self.settings.timeout_s:g}); the measuring worker was restarted")

    def lost_set(self, lives: list, reason: str) -> str:
        """What the driver says when a set measured together produced no readings (its worker
        died, or it ran past its time): each of its configs is measured again alone."""
        numbers = ", ".join(f"#{lv.number}" for lv in lives)
        return f"latency: the set of {len(lives)} measured together ({numbers}) was lost ({reason}); " \
               "measuring each alone"

    # ------------------------------------------------------------------ for the proposer
    def for_proposals(self) -> dict:
        """The proposer's latency checks (`nas.search.proposals.Pricer`), when the study has a
        latency budget."""
        if self.budget is None:
            return {}
        return {"latency_screen": self.screen, "latency_confirm": self.confirm,
                "latency_odds": self.odds, "latency_prefetch": self.prefetch}

    def screen(self, config) -> tuple[str, float] | None:
        """(reason, ms) when `config` is over the latency budget before it is measured (a
        latency stored for this device, or the model sure of it), else None; for a config this
        run measured before it became a trial (`probed`), that reading."""
        probed = self._probed(config)
        if probed is not None:
            return probed
        stored = self.lookup(config)
        if stored is not None:
            return STORED_LATENCY_REASON, float(stored["latency_ms"])
        verdict = self.predict(config)
        return (LATENCY_REASON, float(verdict["predicted_ms"])) if verdict and verdict["skip"] else None

    def confirm(self, config) -> tuple[str, float] | None:
        """`screen` again for the one config about to become a trial (the model may have been
        refitted since it was drawn); then, with `measures_first` and a model that cannot place
        it within the budget, its latency measured now: (reason, ms) when it is over."""
        found = self.screen(config)           # a stored latency, or the model sure it is over
        if found is not None or not self.measures_first:
            return found
        verdict = self.predict(config)
        if self.certain(verdict):
            return None                       # measured as a trial, beside training
        if self.measure_now(config, verdict) is None:
            return None                       # the trial's own measurement will say why
        return self._probed(config)           # over the budget: a rejected draw, forgotten

    def odds(self, config) -> float:
        """The probability that `config` is within the latency budget: 0 or 1 for a stored
        latency, else from the model's prediction and its held-out relative error (log-normal);
        1.0 (no preference) before there is a model."""
        stored = self.lookup(config)
        if stored is not None:
            return float(float(stored["latency_ms"]) <= self.budget)
        verdict = self.predict(config)
        if not verdict:
            return 1.0
        sigma = max(1.25 * float(verdict.get("mape") or 0.0), 0.02)
        return 0.5 * math.erfc(-math.log(self.budget / verdict["predicted_ms"]) / (sigma * math.sqrt(2)))

    @property
    def measures_first(self) -> bool:
        """Uncertain draws are measured before they become trials (`latency.measure_first`; by
        default when a latency model is set and the study has a latency budget)."""
        wanted = self.settings.measure_first
        wanted = bool(self.settings.model) if wanted is None else wanted
        return wanted and self.budget is not None and self.measurer is not None

    def certain(self, verdict: dict | None) -> bool:
        """The model puts the config within the budget even at the top of its margin."""
        return bool(verdict) and self.budget is not None and verdict["high_ms"] <= self.budget

    def _probed(self, config) -> tuple[str, float] | None:
        """(MEASURED_LATENCY_REASON, ms) of a config measured before it became a trial; one over
        the budget is forgotten here (a rejected draw, never a trial: drawn again, it is `stored`)."""
        probed = self.probed.get(config.config_hash())
        if probed is None:
            return None
        ms = float(probed["result"]["latency_ms"])
        if self.budget is not None and ms > self.budget:
            del self.probed[config.config_hash()]
        return MEASURED_LATENCY_REASON, ms

    def prefetch(self, configs: list) -> list[tuple]:
        """measure_first, ahead: of a proposer's candidates (best first), those `confirm` would
        measure one at a time before reaching one it takes unmeasured (stored, or the model
        certain of it), up to `MEASURE_SET`, measured together now, each once more where its
        reading asks for it (`recheck`) and the faster kept, as `measure_now` does. Returns
        [(config, (MEASURED_LATENCY_REASON, ms))] of the readings; those over the budget are
        rejected draws (forgotten, `_probed`). With fewer than two to measure it measures
        nothing (`confirm` measures one alone)."""
        if not self.measures_first:
            return []
        wanted = []
        for config in configs:
            if len(wanted) == MEASURE_SET:
                break
            found = self.screen(config)       # stored, measured already, or predicted over
            if found is not None and found[1] <= self.budget:
                break                 # confirm takes this one as it is: none after it is measured
            if found is not None:
                continue              # over the budget without measuring
            verdict = self.predict(config)
            if self.certain(verdict):
                break
            wanted.append((config, verdict))
        if len(wanted) < 2:
            return []
        firsts = self._measure_set([c for c, _ in wanted])
        again = [(c, v, r, self.recheck(r, v)) for (c, v), r in zip(wanted, firsts) if r is not None]
        twice = [c for c, _, _, why in again if why is not None]
        seconds = iter(self._measure_set(twice) if twice else [])
        out = []
        for config, verdict, first, why in again:
            kept = first
            if why is not None:
                second = next(seconds)
                if second is not None:
                    kept = min(first, second, key=lambda r: float(r["latency_ms"]))
            self.learned(config, kept)
            self.probed[config.config_hash()] = {"result": kept, "first": first if why else None,
                                                 "why": why, "verdict": verdict}
            out.append((config, self._probed(config)))
        return out

    def _measure_set(self, configs: list) -> list[dict | None]:
        """Readings of `configs` measured together, and waited for; None for one that failed
        (it then goes the trial's way, which reports why)."""
        if not configs:
            return []
        handle = self.submit(configs)
        limit = self.timeout_s(len(configs))
        if limit is None:
            limit = measuring_limit_s(self.settings.timeout_s, len(configs)) + WORKER_START_S
        try:
            if not self.executor.wait([handle], timeout=limit):
                self.executor.cancel(handle)
                return [None] * len(configs)
            readings = self.readings(configs, self.executor.result(handle))
        except TaskLost:
            return [None] * len(configs)
        return [r if r.get("ok") else None for r in readings]

    def measure_now(self, config, verdict: dict | None) -> dict | None:
        """Measure `config` on the measuring worker and wait (a draw about to become a trial; the
        same second reading as a trial's when the first is contradicted or near the budget).
        The reading is learned and kept for the trial (`probed`). None when the measurement
        failed or timed out: the config then goes the trial's way, which reports why."""
        first = self._measure_once(config)
        if first is None:
            return None
        kept, why = first, self.recheck(first, verdict)
        if why is not None:
            second = self._measure_once(config)
            if second is not None:
                kept = min(first, second, key=lambda r: float(r["latency_ms"]))
        self.learned(config, kept)
        self.probed[config.config_hash()] = {"result": kept, "first": first if why else None,
                                             "why": why, "verdict": verdict}
        return kept

    def _measure_once(self, config) -> dict | None:
        handle = self.submit([config])
        limit = self.timeout_s()
        limit = limit if limit is not None else self.settings.timeout_s + WORKER_START_S
        try:
            if not self.executor.wait([handle], timeout=limit):
                self.executor.cancel(handle)
                return None
            result = self.readings([config], self.executor.result(handle))[0]
        except TaskLost:
            return None
        return result if result.get("ok") else None

    def recheck(self, result: dict, verdict: dict | None) -> str | None:
        return recheck(float(result["latency_ms"]), verdict, self.budget, self.settings.recheck_near)

    def learned(self, config, result: dict) -> None:
        """A measurement to keep: in the store of the device it reports (a restarted worker on
        another node stores under its own), this run's record, and the latency model."""
        from nas.latency.store import device_store

        name = result.get("latency_device") or self.device
        store = self.store if name == self.device else device_store(name)
        result = {**result, "config": config.to_dict()}     # a latency model fits on these
        store.put(self._key(config, name), result)
        self.record.put(self._key(config, name), result)
        if self.predictor is not None:
            self.predictor.learn(config, float(result["latency_ms"]))

    def timeout_s(self, configs: int = 1) -> float | None:
        """After how long the driver stops a measurement of `configs` configs measured together
        (None: a task waits for its resources first, so its own timer is the worker's)."""
        if self.measurer is None or not self.measurer.dedicated:
            return None
        return measuring_limit_s(self.settings.timeout_s, configs) + self.grace_s

    def ahead(self, parallel: int) -> int:
        """Trials asked beyond the training slots, for the measuring worker to price ahead:
        `latency.ahead`, by default twice the slots up to a full set (`MEASURE_SET`), at least the
        slots. With only as many ahead as slots, 4 slots of 2-8 s evaluations took their configs
        one or two at a time, each set paying for the yardstick, and waited for them (slot
        utilisation 0.87 against 0.94 without a latency budget; 0.95 priced 8 ahead:
        benchmarks/results/utilization.jsonl)."""
        if self.measurer is None:
            return 0
        if self.settings.ahead is not None:
            return self.settings.ahead
        return max(parallel, min(2 * parallel, MEASURE_SET))


def trial_gpus(spec, nodes: list[dict]) -> float:
    """GPUs one training trial takes: `resources.gpus`, else 1 when the study's device wants one."""
    gpus = spec.resources.gpus
    if gpus is None:
        gpus = 1.0 if wants_gpu(spec.device, nodes) else 0.0
    return gpus
