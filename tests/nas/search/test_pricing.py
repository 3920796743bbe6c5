"""Pricing returns what it learned and decides re-measurements by a pure rule; the latency policy
for one trial is a `LatencyStep` the driver applies; the driver reads the latency store without
torch (nas.latency.store, not nas.latency.measure)."""

import math
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from nas.search.contract import MEASURED_LATENCY_REASON
from nas.search.pricing import (AGAIN, FAILED, KNOWN, MEASURE, MEASURE_SET, OVER, LatencyPricer, LatencyStep,
                                predicted_over, price, recheck, verdict_attrs, wants_check)

REPO = Path(__file__).resolve().parents[3]


def test_a_reading_is_measured_again_when_the_model_contradicts_it_or_it_is_near_the_budget():
    model = {"predicted_ms": 10.0, "margin": 0.05}
    assert recheck(15.0, model, None, None) == "+50% off the model's 10 ms (margin 5%)"
    assert recheck(10.8, model, None, None) is None                  # within max(margin, 10 %)
    assert recheck(10.0, {"predicted_ms": 5.0, "margin": math.inf}, None, None) is None   # no stated margin
    assert recheck(20.5, None, 21.0, 0.05) == "within 5% of the 21 ms budget"
    assert recheck(26.4, None, 21.0, 0.05) is None and recheck(20.5, None, 21.0, 0.0) is None


def test_the_models_view_is_returned_as_the_attributes_to_record():
    verdict = {"predicted_ms": 24.123456, "low_ms": 22.0, "margin": math.inf, "n": 7, "skip": True}
    assert verdict_attrs(verdict) == {"latency_predicted_ms": 24.1235, "latency_predicted_low_ms": 22.0,
                                      "latency_model_margin": None, "latency_model_n": 7}
    assert predicted_over({**verdict, "margin": 0.05}, 20.0) == (
        "latency_ms 24.12 ms predicted, at least 22.00 ms within the model's margin of 5.0% > "
        "20.00 ms (not measured)")


def test_fvcore_checks_trial_0_and_every_nth():
    assert [n for n in range(12) if wants_check(n, 5)] == [0, 5, 10]
    assert [n for n in range(12) if wants_check(n, 0)] == [0]


def test_the_driver_reads_the_latency_store_without_torch():
    source = (REPO / "nas" / "search" / "pricing.py").read_text()
    assert "nas.latency.store import" in source
    assert not re.search(r"from nas\.(latency\.)?measure import|import nas\.(latency\.)?measure", source)
    code = ("import sys, nas.engine, nas.search.pricing, nas.latency.store; "
            "print(sorted({'torch', 'nas.latency.measure'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.strip()
    assert out == "[]"


# ------------------------------------------------------------------ the latency policy, one trial
class _Pricer(LatencyPricer):
    """A latency pricer without a measuring worker: `stored` stands in for the device store,
    `verdicts` for the latency model; `learned` keeps what it was given."""

    def __init__(self, budget=20.0, near=0.05, stored=None, verdicts=None):
        spec = SimpleNamespace(latency=SimpleNamespace(recheck_near=near), constraints={"latency_ms": budget})
        super().__init__(spec, executor=None, run_dir=Path("."), target="", grace_s=0.0)
        self.stored, self.verdicts, self.kept = stored or {}, verdicts or {}, []

    def lookup(self, config):
        return self.stored.get(config)

    def predict(self, config):
        return self.verdicts.get(config)

    def learned(self, config, result):
        self.kept.append((config, result))


def _live(config="c"):
    return SimpleNamespace(config=config, chash=config, verdict=None, first_latency=None)


def test_a_new_trials_latency_is_stored_measured_or_spared():
    assert _Pricer().place(_live()) == LatencyStep(MEASURE)
    stored = {"latency_ms": 12.0, "latency_device": "cpu"}
    assert _Pricer(stored={"c": stored}).place(_live()) == LatencyStep(KNOWN, reading=stored, source="store")
    verdict = {"predicted_ms": 40.0, "low_ms": 30.0, "margin": 0.25, "n": 9, "skip": True}
    lv, pricer = _live(), _Pricer(verdicts={"c": verdict})
    step = pricer.place(lv)
    assert lv.verdict is verdict and step.action == OVER and step.predicted_ms == 40.0
    assert step.attrs == {**verdict_attrs(verdict), "latency_source": "predicted"}
    assert step.reason == predicted_over(verdict, 20.0)


def test_a_reading_made_before_the_trial_is_recorded_with_its_first_reading():
    pricer, first, kept = _Pricer(), {"latency_ms": 19.5}, {"latency_ms": 18.0}
    pricer.probed["c"] = {"result": kept, "first": first, "why": "within 5% of the 20 ms budget",
                          "verdict": None}
    step = pricer.place(_live())
    assert step == LatencyStep(KNOWN, {"latency_first_ms": 19.5, "latency_recheck": "within 5% of the 20 ms budget"},
                               kept, "measured")
    assert pricer.probed == {}


def test_a_reading_near_the_budget_is_measured_again_and_the_faster_kept():
    pricer, lv = _Pricer(), _live()
    assert pricer.measured(lv, {"ok": False, "reason": "boom", "error": "tb"}) == \
        LatencyStep(FAILED, reason="latency: boom", error="tb")
    first = {"ok": True, "latency_ms": 19.6}
    again = pricer.measured(lv, first)
    assert again.action == AGAIN and again.reason == "within 5% of the 20 ms budget"
    assert again.attrs == {"latency_first_ms": 19.6, "latency_recheck": again.reason} and lv.first_latency is first
    second = {"ok": True, "latency_ms": 19.9}
    assert pricer.measured(lv, second) == LatencyStep(KNOWN, reading=first, source="measured")
    assert pricer.kept == [("c", first)]
    far = {"ok": True, "latency_ms": 5.0}
    assert pricer.measured(_live(), far) == LatencyStep(KNOWN, reading=far, source="measured")


def test_a_proposals_cost_is_not_priced_again(monkeypatch):
    """`space.complexity` runs once for a trial whose proposal priced it; the fvcore check
    (it compares the training parameters) prices it itself."""
    import space
    from nas_testing import TINY_SPACE

    config = next(space.load_space(TINY_SPACE).enumerate())
    cost = space.complexity(config)
    metrics = cost.as_metrics()
    calls = []
    monkeypatch.setattr(space, "complexity", lambda *a, **k: calls.append(1) or cost)
    assert price(config, check=False, metrics={k: float(v) for k, v in metrics.items()}).metrics == \
        {k: (float(v) if k == "memory_mb" else int(v)) for k, v in metrics.items()}
    assert calls == []
    price(config, check=False)
    assert calls == [1]


def test_the_driver_prices_a_proposed_config_once(tmp_path, local_ray, monkeypatch):
    """The proposer priced each new trial's config when it drew it; the driver does not again
    (trial 0 is the fvcore-checked one, which prices itself)."""
    import collections

    import space
    from nas.engine import SearchEngine
    from nas.storage import open_study
    from nas.study import parse_study
    from nas_testing import study_dict

    calls, complexity = collections.Counter(), space.complexity
    monkeypatch.setattr(space, "complexity", lambda config, *a, **k: calls.update([config.config_hash()])
                        or complexity(config, *a, **k))
    spec = parse_study(study_dict(tmp_path, objectives=["flops", "params"], evaluator=None, trials=8,
                                  sampler={"name": "tpe"}, constraints={"flops": 2.0e6}), label="t")
    SearchEngine(spec).run()
    study, _ = open_study(tmp_path / "run")
    priced = [t.user_attrs["config_hash"] for t in study.get_trials()
              if t.number > 0 and "reused_from" not in t.user_attrs]
    assert priced and [calls[h] for h in priced] == [1] * len(priced)


# ------------------------------------------------- measure_first, ahead: candidates measured together
class _Prefetcher(_Pricer):
    """`_Pricer` that measures first (`measure_first`), with `_measure_set` standing in for the
    measuring worker: `readings` {config: ms}; every set it was asked to measure is kept."""

    def __init__(self, readings, verdicts, stored=None):
        super().__init__(budget=20.0, near=0.05, stored=stored, verdicts=verdicts)
        self.settings.measure_first, self.settings.model = True, "auto"
        self.measurer = object()
        self.readings_ms, self.sets = readings, []

    def _measure_set(self, configs):
        self.sets.append(list(configs))
        return [{"ok": True, "latency_ms": self.readings_ms[c]} for c in configs]


class _C(str):
    def config_hash(self):
        return str(self)


def _verdict(ms, certain=False):
    return {"predicted_ms": ms, "low_ms": ms * 0.9, "high_ms": 15.0 if certain else ms * 3,
            "margin": 0.1, "n": 20, "skip": False}


def test_the_candidates_confirm_would_measure_one_by_one_are_measured_together():
    """Best first: a, b (uncertain), c (the model certain it is within: confirm takes it without
    measuring), d: a and b are measured in one set, c and d not; b, over the budget, comes back as
    a measured rejection and is forgotten; a is kept for its trial. One near the budget (e, 19.5
    ms, within 5 %) is measured once more in a second set and the faster kept."""
    a, b, c, d, e = (_C(x) for x in "abcde")
    verdicts = {a: _verdict(14.0), b: _verdict(25.0), c: _verdict(10.0, certain=True),
                d: _verdict(9.0), e: _verdict(18.0)}
    pricer = _Prefetcher({a: 14.0, b: 26.0, d: 9.0, e: 19.5}, verdicts)
    out = pricer.prefetch([a, b, c, d])
    assert pricer.sets == [[a, b]]
    assert out == [(a, (MEASURED_LATENCY_REASON, 14.0)), (b, (MEASURED_LATENCY_REASON, 26.0))]
    assert list(pricer.probed) == [a] and [k for k, _ in pricer.kept] == [a, b]
    assert pricer.place(_live(a)).reading == {"ok": True, "latency_ms": 14.0}   # its trial's reading
    assert pricer.prefetch([c, a, b]) == [] and len(pricer.sets) == 1          # c first: nothing
    pricer.sets.clear()
    assert [ms for _, (_, ms) in pricer.prefetch([e, d])] == [19.5, 9.0]
    assert pricer.sets == [[e, d], [e]] and pricer.probed[e]["why"] == "within 5% of the 20 ms budget"


def test_without_measure_first_or_with_one_candidate_nothing_is_measured_ahead():
    a, b = _C("a"), _C("b")
    pricer = _Prefetcher({a: 14.0, b: 15.0}, {a: _verdict(12.0), b: _verdict(12.0)})
    assert pricer.prefetch([a]) == [] and pricer.sets == []        # confirm measures it alone
    pricer.settings.measure_first = False
    assert pricer.prefetch([a, b]) == [] and pricer.sets == []


def test_by_default_twice_the_slots_up_to_a_set_are_priced_ahead():
    """With as many ahead as slots, 4 slots got their configs measured one or two at a time and
    waited for them; by default the measuring worker gets twice the slots, up to a full set."""
    pricer = _Pricer()
    pricer.settings.ahead = None
    assert pricer.ahead(4) == 0                       # no measuring worker: nothing is priced ahead
    pricer.measurer = object()
    assert [pricer.ahead(p) for p in (1, 2, 3, 4, 8, 16)] == [2, 4, 6, 8, 8, 16]
    assert MEASURE_SET == 8
    pricer.settings.ahead = 3                         # the study file's `latency.ahead` decides
    assert [pricer.ahead(p) for p in (1, 16)] == [3, 3]
