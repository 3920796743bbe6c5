"""Deterministic synthetic accuracy landscapes over OverLoCK configs, and an evaluator that scores a
config with one of them instantly (no training), for the search-efficiency benchmark.

A landscape is a function `config -> accuracy in (0, 1)`. Each one has diminishing returns in
compute and real interactions between the depth split (Base / Overview / Focus), the widths, the
region count and the kernels, so the best architecture at a given cost is not the one a single
feature picks. Their shapes differ on purpose, so a sampler tuned to one is not rewarded on all:

- `ridge`: a saturating gain in compute plus smooth interaction terms, each with an optimum that
  moves with another field (the best Focus share of the deep depth moves with the stage-3/4 width
  ratio, the best region count with the Overview depth and the last width, ...).
- `bottleneck`: accuracy limited by the weakest of three nets (Base, Overview context, Focus): a
  soft minimum of saturating capacities, so depth added to a net that is not the bottleneck is
  wasted; the Focus capacity also depends on the receptive field (region count x kernel).
- `rugged`: a saturating compute term plus epistatic pair effects drawn from a hash of the pair of
  decisions (an NK-like landscape: no smooth structure to exploit in those terms) and 1 % noise.

Every value is deterministic per config: the noise is seeded by the config hash and the landscape
name. The search-efficiency benchmark enumerates a space and scores every config with the same
function, so the exact Pareto front is known.

A study file uses it as (the benchmark puts this folder on `sys.path`; the executor gives every
Ray worker the driver's `sys.path`, so the workers import it too):

    evaluator: {name: "landscapes:LandscapeEvaluator", landscape: ridge}

`landscape` may also be `module:attribute` naming a callable `config -> accuracy` (for example a
surrogate fitted to real trainings), resolved in the worker.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
from typing import Callable

import space

# Compute is measured as log2(multiply-adds per input pixel) (fvcore convention), so a landscape
# means the same at any resolution; the xt_t space at 224x224 spans 15.3..16.9 (2.0-5.8 GMACs).


def _unit_hash(*parts) -> float:
    """A deterministic number in [0, 1) from `parts` (stable across processes and runs)."""
    text = "|".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2 ** 64


def features(config, cost=None) -> dict:
    """The quantities the landscapes are written in; `cost` (a `space.Cost`) when already known."""
    cost = cost if cost is not None else space.complexity(config)
    h, w = config.resolution
    deep_overview = config.overview_depth
    deep_focus = sum(config.focus_depths)
    return {
        "log_compute": math.log2(cost.flops / (h * w)),
        "base_depth": sum(config.base_depths),
        "overview_depth": deep_overview,
        "focus_depth": deep_focus,
        "focus_share": deep_focus / (deep_overview + deep_focus),
        "w0": config.widths[0], "w2": config.widths[2], "w3": config.widths[3],
        "region_count": config.region_count,
        "kernel": config.dynamic_kernels[0],
        "small_kernel": config.small_kernel,
        "pixels_stage3": (h / 16) * (w / 16),
        "hash": config.config_hash(),
    }


def _saturating(x: float, scale: float) -> float:
    """0 at x = 0, rising to 1 with diminishing returns."""
    return 1.0 - math.exp(-max(x, 0.0) / scale)


def ridge(config, cost=None) -> float:
    f = features(config, cost)
    acc = 0.55 + 0.30 * _saturating(f["log_compute"] - 14.5, 0.9)
    # the best Focus share of the deep depth grows with the stage-4 / stage-3 width ratio
    best_share = 0.70 + 0.12 * (f["w3"] / f["w2"] - 1.75)
    acc -= 0.45 * (f["focus_share"] - best_share) ** 2
    # the best region count grows with the Overview depth (more context) and the last width
    best_regions = 3.2 + 0.8 * f["overview_depth"] + f["w3"] / 256
    acc -= 0.0035 * (f["region_count"] - best_regions) ** 2
    # a large dynamic kernel helps a shallow Focus net, hurts a deep one
    acc += 0.010 * (f["kernel"] - 11) / 2 * (1.0 - f["focus_depth"] / 9.0)
    # the 5x5 small kernel pays only with many regions
    acc += (0.006 if (f["small_kernel"] == 5) == (f["region_count"] >= 7) else -0.004)
    # Base depth is worth more when the first stage is wide
    acc += 0.025 * _saturating(f["base_depth"] * f["w0"], 420.0)
    return acc + 0.002 * (_unit_hash("ridge", f["hash"]) - 0.5)


def _soft_min(values: list[float], sharpness: float) -> float:
    return -math.log(sum(math.exp(-sharpness * v) for v in values)) / sharpness


def bottleneck(config, cost=None) -> float:
    f = features(config, cost)
    base = _saturating(f["base_depth"] * f["w0"], 380.0)
    context = _saturating(f["overview_depth"] * f["w2"] / 64 + 0.4 * f["region_count"], 4.0)
    # receptive field of the Focus net against the stage-3 map: best near 0.6 x its side
    reach = f["region_count"] * f["kernel"] / math.sqrt(f["pixels_stage3"])
    fit = math.exp(-(math.log(reach / 4.5)) ** 2 / 0.5)
    focus = _saturating(f["focus_depth"] * f["w3"] / 128, 9.0) * (0.8 + 0.2 * fit)
    acc = 0.50 + 0.30 * _soft_min([base, context, focus], 12.0)
    acc += 0.05 * _saturating(f["log_compute"] - 14.5, 0.8)
    acc += 0.004 if f["small_kernel"] == 3 and f["kernel"] >= 11 else 0.0
    return acc + 0.003 * (_unit_hash("bottleneck", f["hash"]) - 0.5)


_RUGGED_PAIRS = (("region_count", "small_kernel"), ("kernel", "focus_depth"),
                 ("overview_depth", "w0"), ("base_depth", "w2"), ("w3", "region_count"),
                 ("focus_share", "kernel"))


def rugged(config, cost=None) -> float:
    f = features(config, cost)
    acc = 0.56 + 0.25 * _saturating(f["log_compute"] - 14.6, 0.8)
    for a, b in _RUGGED_PAIRS:      # each pair of decisions has its own effect in [-1.2, 1.2] %
        acc += 0.024 * (_unit_hash("rugged", a, f[a], b, f[b]) - 0.5)
    acc += 0.006 * _saturating(f["focus_depth"] - f["overview_depth"], 3.0)
    return acc + 0.010 * (_unit_hash("rugged-noise", f["hash"]) - 0.5)


LANDSCAPES: dict[str, Callable] = {"ridge": ridge, "bottleneck": bottleneck, "rugged": rugged}


def get_landscape(name: str) -> Callable:
    """A landscape by name (`ridge`, `bottleneck`, `rugged`) or `module:attribute` (a callable
    `config -> accuracy`, or `(config, cost) -> accuracy`)."""
    if name in LANDSCAPES:
        return LANDSCAPES[name]
    if ":" in name:
        module, _, attribute = name.partition(":")
        return getattr(importlib.import_module(module), attribute)
    raise ValueError(f"landscape {name!r}: not one of {', '.join(LANDSCAPES)} nor module:attribute")


def score(landscape: Callable, config, cost=None) -> float:
    """The landscape's accuracy of `config` (passing the cost when the landscape accepts it)."""
    if _takes_cost(landscape):
        return float(landscape(config, cost))
    return float(landscape(config))


def _takes_cost(landscape: Callable) -> bool:
    try:
        return len(inspect.signature(landscape).parameters) >= 2
    except (TypeError, ValueError):     # a builtin or C callable: call it with the config only
        return False


class LandscapeEvaluator:
    """An evaluator (see `nas.evaluators`) that returns the landscape's accuracy at once.

    Settings: `landscape` (a name or `module:attribute`, required); `noise_sd` (default 0): the
    standard deviation of Gaussian noise added to every value it returns, as a training's
    seed-to-seed noise is. The noise is drawn from the trial's seed and the config's hash, so a
    study repeats exactly and two studies (other seeds) see other noise. The benchmark scores a
    study by the noise-free values of the configs on its observed front (what a user exports).
    `rungs` (default none: one rung): epoch budgets for successive halving; a rung at budget b of
    the last rung's B reads lower and noisier than the last, as an early epoch does: minus
    0.05 (1 - b/B), plus `rung_sd` (default 0.01) x (1 - b/B) of seeded noise.
    """

    name = "landscape"
    metric = "accuracy"
    rungs: list = []

    def __init__(self, settings: dict):
        if "landscape" not in settings:
            raise ValueError("evaluator.landscape: missing (ridge, bottleneck, rugged or module:attr)")
        self.settings = dict(settings)
        self.landscape = get_landscape(str(settings["landscape"]))
        self.noise_sd = float(settings.get("noise_sd", 0.0))
        self.rungs = [int(b) for b in settings.get("rungs", [])]
        self.rung_sd = float(settings.get("rung_sd", 0.01))
        if not self.noise_sd >= 0:
            raise ValueError(f"evaluator.noise_sd: {settings['noise_sd']!r} is not a number >= 0")

    def evaluate(self, config, *, budget_epochs, device, seed, workdir, resume_from,
                 weights_name=None):
        accuracy = score(self.landscape, config)
        observed = accuracy + self.noise_sd * noise(seed, config.config_hash())
        full = self.rungs[-1] if self.rungs else 1
        epochs = budget_epochs or full
        lag = 1.0 - epochs / full
        if lag > 0:
            observed += -0.05 * lag + self.rung_sd * lag * noise(seed * 31 + epochs, config.config_hash())
        return {"score": observed, "epochs": epochs, "history": [observed], "weights": None,
                "fidelity": 1.0}


def noise(seed: int, config_hash: str) -> float:
    """A standard normal draw, deterministic in (seed, config hash)."""
    u1 = max(_unit_hash("noise-1", seed, config_hash), 1e-300)
    u2 = _unit_hash("noise-2", seed, config_hash)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
