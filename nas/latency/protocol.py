"""The measuring protocol's identity: its settings, its version and its name, torch-free.

A reading is only comparable with readings taken the same way, so every reading records the
protocol it was taken by (`latency_protocol_version`, `latency_protocol`), and the store keys
readings of each version apart (`nas.latency.store.latency_key`): a study or `latency fit` of
today never mixes its readings with an older protocol's, and readings an earlier study stored stay
readable under their own key, with the protocol they were taken by.

Versions:

1. (until December 2026) 5 rounds of 6 timed forwards, the median of the round minima; a lone
   config idled between its rounds for the time 7 more configs would have taken (up to 10 s a
   pause), and one more set of rounds was taken when the round minima spread over 10 %. Two
   `profile` processes agreed within +-10 % for 4 of 12 configs on an idle 2-core virtual machine:
   the forwards after each pause ran slower than the ones before it, by an amount that changed
   from process to process (docs/explanation/latency.md).
2. Calibrated against a yardstick, on CPU. The machine's speed itself drifts: on that virtual
   machine the yardstick's fastest forward ranged over 0.88-1.09 of its nominal time across 32
   `profile` processes, and every config with it; the readings as timed agreed within +-10 % for
   62 % of 16 configs, the calibrated ones for all 16 (`benchmarks/bench_latency_repeat.py`,
   benchmarks/results/latency_repeat.jsonl). So a fixed yardstick model (YARDSTICK) takes its turn
   in every round beside the measured configs, and a reading is the median over rounds of (the
   config's fastest forward in the round / the yardstick's), times the yardstick's nominal time
   on this device: the one the first calibrated reading on the device measured, kept in the
   device's folder (`nas.latency.store.nominal_yardstick_ms`). The reading as timed is kept too
   (`latency_raw_ms`: the median of the round minima), with the yardstick's time now
   (`latency_yardstick_ms`) and the machine's speed against its nominal (`latency_speed`). No
   idling: the rounds run back to back. 10 rounds of 3 timed forwards after WARMUP forwards; each
   reading states its 95 % uncertainty (`uncertainty_pct`), and while that is wider than
   UNCERTAINTY_TARGET_PCT one more set of rounds is pooled in, up to MAX_SETS sets. On CUDA there
   is no yardstick (CUDA events time the GPU alone): the median of the round minima.
"""

from __future__ import annotations

import math
import statistics

__all__ = ["VERSION", "WARMUP", "REPEATS", "ROUNDS", "GROUP", "MAX_SETS", "UNCERTAINTY_TARGET_PCT",
           "STATISTIC", "YARDSTICK", "YARDSTICK_INPUT", "describe", "uncertainty_pct"]

VERSION = 2
WARMUP = 10                   # untimed forwards first
REPEATS = 30                  # timed forwards a set, taken in ROUNDS rounds
ROUNDS = 10
GROUP = 8                     # configs whose rounds are interleaved (the models held at once)
MAX_SETS = 3                  # sets of rounds at most, while the uncertainty is too wide
UNCERTAINTY_TARGET_PCT = 5.0  # a reading re-measures (then warns) while wider than +-5 %
STATISTIC = "median of round minima"
# The yardstick: OverLoCK-XT's widths and kernels with one block a stage, deploy structure, seed 0,
# one 3 x 64 x 64 image (about 25 ms of one thread of the development CPU), in the measurement's
# dtype, memory format and threads. Changing it changes every calibrated reading: a new VERSION.
YARDSTICK = {"preset": "overlock_xt", "base_depths": (1, 1, 1), "overview_depth": 1, "focus_depths": (1, 1)}
YARDSTICK_INPUT = (1, 3, 64, 64)


def describe(clock: str, measured: int, version: int = VERSION) -> str:
    """`latency_protocol` in words: the version, statistic, clock and how rounds were spread."""
    if clock == "cuda":
        text = f"v{version}: {STATISTIC}, cuda clock"
    else:
        text = f"v{version}: {STATISTIC} relative to the yardstick's, times its nominal ms, {clock} clock"
    if measured > 1:
        text += f", rounds interleaved over {measured} configs"
    return text


def uncertainty_pct(per_round: list[float]) -> float:
    """The reading's 95 % uncertainty, +-% of the latency, from its rounds (their minima, or on
    CPU their minima relative to the yardstick's).

    The half-width of the distribution-free confidence interval of the median of the rounds'
    values (the order statistics of the binomial interval; with fewer rounds than that interval
    needs, the whole range), relative to the median. It says how far the median could move were
    the same process to take the rounds again; a reading whose rounds disagree states it.
    `benchmarks/bench_latency_repeat.py` checks it against a second process.
    """
    xs = sorted(per_round)
    n = len(xs)
    if n < 2:
        return math.inf
    lo, hi = _median_interval(n)
    median = statistics.median(xs)
    return 100.0 * (xs[hi] - xs[lo]) / 2.0 / median if median > 0 else math.inf


def _median_interval(n: int, coverage: float = 0.95) -> tuple[int, int]:
    """0-based order statistics (lo, hi) whose interval covers the median with >= `coverage`
    (binomial(n, 1/2)), the narrowest symmetric one; (0, n - 1) when none narrower does."""
    best = (0, n - 1)
    for k in range(n // 2):
        # P(X_(k+1) <= median <= X_(n-k)) = 1 - 2 P(Binomial(n, 1/2) <= k)
        tail = sum(math.comb(n, j) for j in range(k + 1)) / 2 ** n
        if 1 - 2 * tail >= coverage:
            best = (k, n - 1 - k)
        else:
            break
    return best
