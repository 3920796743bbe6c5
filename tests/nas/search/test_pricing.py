"""Pricing returns what it learned and decides re-measurements by a pure rule; the driver reads
the latency store without torch (nas.latency.store, not nas.latency.measure)."""

import math
import re
import subprocess
import sys
from pathlib import Path

from nas.search.pricing import predicted_over, recheck, verdict_attrs, wants_check

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
