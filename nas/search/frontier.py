"""`frontier`: a search strategy that uses the exact cost model (study file `sampler: frontier`).

Every objective that is a cost (flops, flops_paper, params, memory_mb) is known exactly before
training, so only the others (the accuracy, a measured latency) need a model. Each proposal:

1. keeps a pool of candidate configs within every budget, priced exactly: uniform draws at first,
   then each proposal adds mutations (one or two decisions changed) of the configs on the current
   front, and a few uniform draws, so the pool is densest where the front is;
2. fits a Gaussian process to the finished trials, for each objective the cost model does not
   give: Optuna's ARD Matern-5/2 regressor (a length scale per config feature, the noise variance
   learned under a prior that expects noisy trainings, `NOISE_PRIOR_RATE`) around a mean linear
   in the log costs (`TREND_COSTS`: dearer configs may be better, and the model learns by how
   much), its kernel parameters optimised again every `REFIT_EVERY` finished trials and
   conditioned on every trial in between;
3. picks the unseen candidate with the largest expected hypervolume improvement over the front,
   exact for any number of modelled objectives beside the exact costs (`expected_hvi`): the front
   is the non-dominated set of the finished trials at the model's mean (a lucky noisy reading does
   not stand as the front) and of the running trials at their believed values (so parallel
   proposals spread out); the region it leaves undominated is cut into boxes once per proposal
   (Optuna's box decomposition), so the cost grows with the front, not with the history; each
   candidate's improvement is discounted by how little one more noisy reading of it would teach
   the model (`augmentation`), so a region the model already knows to within the noise is not
   sampled over and over for lucky readings.

The first `n_startup` trials are uniform draws within the budgets: the draws random search makes
with the same seed (`starter`), as Optuna's TPE and GP samplers start with their RandomSampler's,
so a comparison of the two strategies on one seed measures what the model adds, not the luck of
two uniform streams. An architecture already in the study is never proposed again. Candidates
priced over a budget are the strategy's rejected draws.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any, Sequence

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from nas.storage import SCORE_METRICS
from nas.util import space_size
from space.budgets import within

from .contract import (EXACT_METRICS, INVALID_REASON, MAX_UNIFORM_DRAWS, Pricer, Proposal,
                       ProposalError, count)

# candidates: 48 new ones a proposal (16 before df418e0): with noisy readings the model's front
# is uncertain, and more mutations of it put more of the true front in the pool (10 seeds of the
# noise benchmark, docs/explanation/search.md)
DEFAULTS = {"n_startup": 10, "candidates": 48, "pool": 192, "explore": 0.0, "scored": 4096}
REFIT_EVERY = 10          # finished trials between two optimisations of a GP's kernel parameters
# The GP noise variance's prior, Gamma(1.1, rate) in units of the readings' variance: mean 0.22.
# Optuna's GPSampler uses rate 30 (mean 0.037), for objectives that are nearly deterministic; a
# training is not (two seeds of the real trainings in benchmarks/data/surrogate_trainings.jsonl
# differ by a noise variance of 0.51 of the readings' variance), and under rate 30 a GP of a few
# dozen trials fits about 1 % of such noise and passes through every lucky reading, which then
# stands as the front and is mutated (tests/nas/search/test_frontier_gp.py). Rate 5 was not tuned
# on the benchmark: rate 1 (mean 1.1) looked worse on `rugged`, whose hash-drawn pair effects the
# model cannot tell from noise, in a quick exploration that is not in the repository.
NOISE_PRIOR_RATE = 5.0
# the most candidates the pool keeps (the oldest go first: the start's uniform draws and the
# mutations of fronts long since passed): 5.6 KiB each on xt_t, so at most about 90 MiB whatever
# the trial count, where 48 a proposal would reach 48,000 by trial 1,000
POOL_MAX = 16_384
# The GP's mean is linear in the log costs (the cost model's, exact before training: a config's
# last features, `config_features`), the kernel models what is left. A constant mean (Optuna's)
# reverts to the average reading wherever the trials are few: with readings as noisy as the
# differences between architectures, the configs dearer than the few tried looked no better than
# the average, and the search stopped short of the front's accurate end (held-out space, noise at
# the variance, the mean gap to random search over 20 paired seeds at 25 / 50 trials: -0.005 /
# -0.002 before the trend, +0.029 / +0.033 with it; docs/explanation/search.md). The trend's
# sign and size are learned from the trials: an objective that falls with compute gets a falling
# mean. TREND_RIDGE: the ridge penalty on its coefficients (the objective standardised, each cost
# in [0, 1]), which holds the trend near flat while the trials are few or span a narrow range of
# costs. 1 and 0.1 did alike on xt_t's landscapes at the variance (20 seeds x 50 trials), so the
# milder penalty was not taken.
TREND_COSTS = ("flops", "params", "memory_mb")
TREND_RIDGE = 1.0
ENUMERATE_UP_TO = 5_000   # a space this small is priced whole: the pool is every config within budget
_MISSING = object()


# --------------------------------------------------------------------------------- decisions
class DecisionTrial:
    """Stands in for an Optuna trial in `space.suggest`: each decision takes the value in
    `fixed` (matched by name, else by the name before '@', whose suffix moves with a split's
    range), a different one for names in `mutate`, else a uniform one. Records the params and
    distributions chosen, which the real trial then gets."""

    def __init__(self, rng: random.Random, fixed: dict | None = None, mutate: Sequence[str] = ()):
        self.rng = rng
        self.fixed = dict(fixed or {})
        self.by_base = {k.split("@")[0]: v for k, v in self.fixed.items()}
        self.mutate = set(mutate)
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, Any] = {}

    def _pick(self, name: str, options: list, distribution) -> Any:
        current = self.fixed.get(name, self.by_base.get(name.split("@")[0], _MISSING))
        known = current is not _MISSING and current in options
        if known and name in self.mutate and len(options) > 1:
            value = self.rng.choice([o for o in options if o != current])
        elif known and name not in self.mutate:
            value = current
        else:
            value = self.rng.choice(options)
        self.params[name], self.distributions[name] = value, distribution
        return value

    def suggest_categorical(self, name: str, choices):
        return self._pick(name, list(choices), CategoricalDistribution(list(choices)))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False):
        return self._pick(name, list(range(low, high + 1, step)),
                          IntDistribution(low, high, log=log, step=step))

    def suggest_float(self, name: str, low: float, high: float, *, step=None, log: bool = False):
        distribution = FloatDistribution(low, high, log=log, step=step)
        current = self.fixed.get(name, _MISSING)
        if current is not _MISSING and low <= current <= high and name not in self.mutate:
            value = current
        elif log:
            value = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        else:
            value = self.rng.uniform(low, high)
        self.params[name], self.distributions[name] = value, distribution
        return value


class OdometerTrial(DecisionTrial):
    """Takes the options given by `prefix` (an index per decision, 0 past its end) and records
    how many each decision had: `space.suggest` over successive prefixes enumerates a space."""

    def __init__(self, prefix: list[int]):
        super().__init__(random.Random(0))
        self.prefix, self.counts = prefix, []

    def _pick(self, name: str, options: list, distribution) -> Any:
        i = len(self.counts)
        self.counts.append(len(options))
        value = options[self.prefix[i] if i < len(self.prefix) else 0]
        self.params[name], self.distributions[name] = value, distribution
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step=None, log: bool = False):
        raise ValueError(f"{name}: a continuous range cannot be enumerated")


def next_prefix(prefix: list[int], counts: list[int]) -> list[int] | None:
    """The decision path after `prefix`, given each decision's option count (None: done)."""
    prefix = list(prefix[:len(counts)]) + [0] * (len(counts) - len(prefix))
    i = len(counts) - 1
    while i >= 0 and prefix[i] + 1 >= counts[i]:
        i -= 1
    return None if i < 0 else prefix[:i] + [prefix[i] + 1]


# ---------------------------------------------------------------------------------- features
def config_features(config, metrics: dict) -> list[float]:
    """Numbers describing a config: every numeric field (lists flattened) and the log costs."""
    out: list[float] = []
    for value in config.to_dict().values():
        items = value if isinstance(value, (list, tuple)) else [value]
        out.extend(float(v) for v in items if isinstance(v, (int, float)))
    out += [math.log(max(metrics[m], 1e-9)) for m in TREND_COSTS]
    return out


class GaussianProcess:
    """GP regression of one objective on config features: Optuna's ARD Matern-5/2 regressor
    (the one GPSampler uses, through `nas._optuna`), one length scale per feature and the noise variance
    learned by maximum a posteriori, on features scaled to [0, 1] and the objective standardised.
    Optuna's priors, except the noise variance's: `NOISE_PRIOR_RATE` (why: there). With `trend`
    (columns of x), the mean is linear in those columns and the regressor models the residual
    (`TREND_RIDGE`; why: there).

    `fit(x, y, previous)` optimises the kernel parameters, warm-started from `previous` (a fitted
    GaussianProcess); `fit(x, y, previous, refit=False)` keeps `previous`'s parameters and only
    conditions on the new data (one Cholesky). Maintained code over the hand-written grid this
    replaced: that one had one length scale for every feature and a noise capped at 10 % of the
    variance, which noisy trainings (seed-to-seed rank agreement 0.02-0.91 here) overrun.
    """

    def fit(self, x: np.ndarray, y: np.ndarray, previous: "GaussianProcess | None" = None,
            refit: bool = True, trend: Sequence[int] = ()) -> "GaussianProcess":
        from nas import _optuna

        self.n = len(y)                       # rows it was conditioned on
        self.y_mean, self.y_std = float(y.mean()), float(y.std()) or 1.0
        z = (y - self.y_mean) / self.y_std
        # the linear trend: ridge regression of the standardised objective on the trend columns
        # (centred on the trials' mean); the kernel models the residual, standardised
        self.trend = list(trend)
        self.centre = x[:, self.trend].mean(0)
        t = x[:, self.trend] - self.centre
        self.beta = np.linalg.solve(t.T @ t + TREND_RIDGE * np.eye(len(self.trend)), t.T @ z)
        z = z - t @ self.beta
        self.r_std = float(z.std()) or 1.0
        z = z / self.r_std
        prior = previous.regressor if previous is not None else None
        if refit or prior is None or prior.inverse_squared_lengthscales.shape[0] != x.shape[1]:
            self.regressor = _optuna.gp_fit(x, z, prior, noise_rate=NOISE_PRIOR_RATE)
        else:
            self.regressor = _optuna.gp_refit_data(prior, x, z)
        return self

    @property
    def parameters(self) -> dict:
        """Length scales (per feature, in the [0, 1] scale), kernel scale and noise variance
        (both in units of the variance the regressor models: the objective's, less its trend;
        `noise_sd` gives the noise in the objective's units)."""
        from nas import _optuna

        return _optuna.gp_parameters(self.regressor)

    @property
    def noise_sd(self) -> float:
        """The learned standard deviation of a reading's noise, in the objective's units."""
        return math.sqrt(self.parameters["noise_var"]) * self.y_std * self.r_std

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the noise-free objective at `x`."""
        from nas import _optuna

        mean, var = _optuna.gp_posterior(self.regressor, x)
        mean = mean * self.r_std + (x[:, self.trend] - self.centre) @ self.beta
        return mean * self.y_std + self.y_mean, np.sqrt(np.maximum(var, 1e-12)) * self.y_std * self.r_std


# ------------------------------------------------------------------------------- acquisition
def _norm_pdf(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _norm_cdf(z):
    from scipy.special import ndtr

    return ndtr(z)


def expected_improvement_below(g: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """E[max(0, g - U)] for U ~ N(mean, sd) (broadcast; 0 where g is -inf)."""
    g = np.asarray(g, dtype=float)
    finite = np.isfinite(g)
    gf = np.where(finite, g, 0.0)
    z = (gf - mean) / sd
    return np.where(finite, (gf - mean) * _norm_cdf(z) + sd * _norm_pdf(z), 0.0)


def augmentation(sd: np.ndarray, noise_sd: np.ndarray) -> np.ndarray:
    """How much one more reading of each candidate can still teach, in (0, 1]: the factor of
    Huang et al.'s augmented expected improvement (J. Global Optim. 34, 2006),
    1 - noise / sqrt(sd^2 + noise^2), for candidates (n, k) whose noise-free objective j has
    posterior sd `sd[:, j]` and whose readings have noise sd `noise_sd[j]`, multiplied over the
    objectives (1 where a reading is exact). A candidate the model already knows to within the
    noise scores little however large its improvement: its reading would mostly be luck."""
    sd = np.asarray(sd, dtype=float)
    noise = np.broadcast_to(np.asarray(noise_sd, dtype=float), sd.shape)
    factor = np.where(noise > 0, 1 - noise / np.sqrt(sd ** 2 + noise ** 2 + 1e-300), 1.0)
    return np.prod(factor, axis=1)


def nondominated(points: np.ndarray) -> np.ndarray:
    """The points no other point dominates (every objective minimised), duplicates once."""
    if not len(points):
        return points
    points = np.unique(points, axis=0)
    keep = np.ones(len(points), dtype=bool)
    for i, p in enumerate(points):
        if keep[i]:
            keep &= ~(np.all(points >= p, axis=1) & np.any(points > p, axis=1))
    return points[keep]


def _boxes(front: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The region below `ref` no point of `front` dominates, as disjoint boxes (lower, upper)."""
    from nas import _optuna

    pts = front[np.all(front < ref, axis=1)] if len(front) else front
    if not len(pts):
        return np.full((1, len(ref)), -np.inf), ref[None, :].astype(float)
    return _optuna.nondominated_boxes(nondominated(pts), ref)


def expected_hvi(front: np.ndarray, ref: np.ndarray, mean: np.ndarray, sd: np.ndarray,
                 max_terms: int = 2_000_000) -> np.ndarray:
    """Expected hypervolume improvement of each candidate over `front` (n, k) below `ref`, every
    objective minimised; candidate i's objective j ~ N(mean[i, j], sd[i, j]) independently
    (sd 0: known exactly, a cost from the cost model).

    Exact and linear in the front: the region no front point dominates is cut into disjoint boxes
    once (Optuna's box decomposition); a candidate's improvement is the sum over boxes of the
    volume of the box above it, a product of one side per objective, and with independent
    objectives the expectation of the product is the product of each side's expectation,
    E[(hi - max(lo, U))+] = E[(hi - U)+] - E[(lo - U)+]. Candidates are scored in chunks of at
    most `max_terms` box-candidate pairs, so memory is bounded whatever the candidate count.

    The expectation is written here (the boxes are Optuna's) rather than taken from BoTorch's
    qLogNEHVI: with the costs exact and one independent GP per modelled objective it is closed
    form, where qLogNEHVI's Monte Carlo samples would add noise and time, and BoTorch would add
    gpytorch and linear_operator to every install. tests/nas/search/test_frontier_ehvi.py holds it
    to hypervolumes integrated by quadrature.
    """
    lower, upper = _boxes(front, ref)
    n, k = mean.shape
    out = np.zeros(n)
    step = max(1, max_terms // max(1, len(lower)))
    for i in range(0, n, step):
        m, s = mean[i:i + step], sd[i:i + step]
        volume = np.ones((len(m), len(lower)))
        for j in range(k):
            mj, sj = m[:, j:j + 1], s[:, j:j + 1]
            if np.all(sj <= 0):
                side = np.clip(upper[None, :, j] - np.maximum(lower[None, :, j], mj), 0, None)
            else:
                # the bounds take few distinct values (the front's coordinates): the Gaussian
                # terms once per value, then gathered per box
                values, at = np.unique(np.concatenate([lower[:, j], upper[:, j]]), return_inverse=True)
                gain = expected_improvement_below(values[None, :], mj, np.maximum(sj, 1e-12))
                side = gain[:, at[len(lower):]] - gain[:, at[:len(lower)]]
            volume *= np.maximum(side, 0.0)
        out[i:i + step] = volume.sum(1)
    return out


def ehvi(front: np.ndarray, ref: np.ndarray, mean: np.ndarray, sd: np.ndarray,
         cost: np.ndarray, max_cells: int = 2_000_000) -> np.ndarray:
    """`expected_hvi` with the first objective ~ N(mean, sd) and the others (`cost`, (N, c)) exact."""
    means = np.column_stack([mean, cost])
    sds = np.column_stack([sd, np.zeros_like(cost)])
    return expected_hvi(front, ref, means, sds, max_terms=max_cells)


# ---------------------------------------------------------------------------------- proposer
class FrontierProposer:
    """The `frontier` strategy (module docstring). Options: `n_startup` uniform trials first,
    `candidates` new candidates per proposal, `pool` candidates drawn at the start, `explore`
    the share of proposals drawn uniformly from the pool, `scored` the most candidates scored by
    one proposal (the newest, which mutate the current front, then a uniform sample of the rest):
    the pool grows by `candidates` a proposal, up to `POOL_MAX`, past which the oldest leave."""

    def __init__(self, space, options: dict, seed: int, directions: Sequence[str],
                 objectives: Sequence[str], pricer: Pricer, starter=None):
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"not an option of the frontier sampler: {sorted(unknown)[0]} "
                             f"(options: {', '.join(DEFAULTS)})")
        self.space, self.pricer = space, pricer
        self.options = {**DEFAULTS, **options}
        self.rng = random.Random(seed)
        self.sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
        self.objectives = list(objectives)
        self.modelled = [i for i, m in enumerate(self.objectives) if m not in EXACT_METRICS]
        # the evaluator's score: the objective successive halving's rung scores are readings of
        self.score = next((i for i, m in enumerate(self.objectives) if m in SCORE_METRICS), None)
        self.pool: dict[str, dict] = {}           # config hash -> candidate within budgets
        self._known: dict[int, dict] = {}         # real trial number -> its config's candidate
        self._hyper: dict[int, tuple] = {}
        self._smoothed: dict[int, np.ndarray] = {}   # trial number -> its values at the model's mean
        self.enumerated = False                   # the pool holds the whole space within budget
        self.fed = False      # the driver calls `observe` for every trial: never read the study
        self._trials: dict[int, Any] = {}         # number -> the trial as last observed
        self.space_size = space_size(space)
        # the start-up's proposer (random search's, same seed), dropped once the model proposes
        # (it keeps a copy of every trial it is told); None: frontier's own uniform draws
        self.starter = starter

    def bind(self, real_number: int, proposal: Proposal) -> None:
        if self.starter is not None:              # the trial itself comes through `observe`
            self.starter.bind(real_number, proposal)

    def observe(self, t) -> None:
        """A trial of the study as stored now (the driver feeds every one, `fed`)."""
        self._trials[t.number] = t
        if self.starter is not None:
            self.starter.observe(t)

    # --------------------------------------------------------------------- the study's trials
    def _candidate(self, trial_like: DecisionTrial) -> tuple[dict | None, str | None]:
        import space as space_pkg

        try:
            config = self.space.suggest(trial_like)
        except (space_pkg.SpaceError, ValueError):
            return None, INVALID_REASON
        reason, _, metrics = self.pricer.judge(config)
        cand = {"params": trial_like.params, "distributions": trial_like.distributions,
                "config": config, "metrics": metrics, "hash": config.config_hash(),
                "x": config_features(config, metrics)}
        return cand, reason

    def _study_candidates(self, study: optuna.Study) -> list[tuple[Any, dict]]:
        """(trial, candidate) for every trial with params (configs rebuilt once, cached)."""
        out = []
        for t in (self._trials.values() if self.fed else study.get_trials(deepcopy=False)):
            if not t.params:
                continue
            cand = self._known.get(t.number)
            if cand is None:
                cand, _ = self._candidate(DecisionTrial(self.rng, t.params))
                if cand is None:
                    continue
                self._known[t.number] = cand
            out.append((t, cand))
        return out

    # ------------------------------------------------------------------------------- propose
    def propose(self, study: optuna.Study) -> Proposal:
        trials = self._study_candidates(study)
        seen = {c["hash"] for _, c in trials}
        done = [(t, c) for t, c in trials if t.state == TrialState.COMPLETE and _feasible(t)]
        stopped = [(t, c) for t, c in trials if _stopped_early(t)] if self.score is not None else []
        rejected: dict[str, int] = {}
        if len(done) + len(stopped) < self.options["n_startup"] or not self.modelled and not done:
            return self._start(study, seen, rejected)
        if not done and any(i != self.score for i in self.modelled):
            return self._start(study, seen, rejected)   # a modelled objective with no reading yet
        self.starter = None                   # the start-up is over: the model proposes
        self._grow(done, rejected)
        fresh = [c for h, c in self.pool.items() if h not in seen]
        if not fresh:
            return self._uniform(seen, rejected)
        fresh = self._sample(fresh)
        if self.rng.random() < self.options["explore"]:
            order = self.rng.sample(range(len(fresh)), len(fresh))
        else:
            running = [c for t, c in trials if t.state == TrialState.RUNNING]
            scores = self._score(done, running, fresh, stopped)
            order = np.argsort(-scores, kind="stable")
        # the candidates `confirm` would measure one at a time, measured together (measure_first)
        over = self.pricer.prefetch([fresh[i]["config"] for i in order])
        for h, reason in over.items():        # measured over the budget: rejected draws
            count(rejected, reason)
            self.pool.pop(h, None)
        for i in order:       # the best one a latency check does not put over the budget
            if fresh[i]["hash"] in over:
                continue
            if self._confirmed(fresh[i], rejected):
                return _proposal(fresh[i], rejected)
        return self._uniform(seen, rejected)

    def _start(self, study: optuna.Study, seen: set, rejected: dict) -> Proposal:
        """A start-up proposal: the starter's draw, or (none, or its draw an architecture the study
        holds, which random search may propose and frontier never does) a uniform one."""
        if self.starter is not None:
            self.starter.fed = self.fed
            proposal = self.starter.propose(study)
            if proposal.config.config_hash() not in seen:
                return proposal
            self.starter.discard(proposal)
            rejected = dict(proposal.rejected)
        return self._uniform(seen, rejected)

    def _sample(self, fresh: list) -> list:
        """At most `scored` candidates: the newest (the pool keeps insertion order), then a
        uniform sample of the older ones."""
        limit = self.options["scored"]
        if len(fresh) <= limit:
            return fresh
        newest = min(self.options["candidates"] * 8, limit)
        older = fresh[:-newest]
        return self.rng.sample(older, limit - newest) + fresh[-newest:]

    def _confirmed(self, cand: dict, rejected: dict) -> bool:
        """The pricer's last check before a candidate becomes a trial (its latency, which may be
        measured now); one over the budget leaves the pool as a rejected draw."""
        reason = self.pricer.confirm(cand["config"], {})
        if reason is None:
            return True
        count(rejected, reason)
        self.pool.pop(cand["hash"], None)
        return False

    def _uniform(self, seen: set, rejected: dict) -> Proposal:
        if self._enumerate(rejected):
            while True:
                fresh = [c for h, c in self.pool.items() if h not in seen]
                if not fresh:
                    raise ProposalError(f"every architecture of the space within the budgets "
                                        f"{self.pricer.budgets} is in the study already")
                cand = self.rng.choice(fresh)
                if self._confirmed(cand, rejected):
                    return _proposal(cand, rejected)
        for _ in range(MAX_UNIFORM_DRAWS):
            cand, reason = self._candidate(DecisionTrial(self.rng))
            if reason is not None:
                count(rejected, reason)
            elif cand["hash"] not in seen and self._confirmed(cand, rejected):
                self.pool.setdefault(cand["hash"], cand)
                return _proposal(cand, rejected)
        raise ProposalError(f"no new config within the budgets {self.pricer.budgets} in "
                            f"{MAX_UNIFORM_DRAWS} uniform draws: loosen a budget or widen the space")

    def _enumerate(self, rejected: dict) -> bool:
        """Price a small space whole, once (True when the pool is the whole feasible space)."""
        small = self.space_size is not None and self.space_size <= ENUMERATE_UP_TO
        if small and not self.enumerated:
            prefix: list[int] | None = []
            while prefix is not None:
                draw = OdometerTrial(prefix)
                cand, reason = self._candidate(draw)
                if reason is not None:
                    count(rejected, reason)
                else:
                    self.pool.setdefault(cand["hash"], cand)
                prefix = next_prefix(prefix, draw.counts)
            self.enumerated = True
        return self.enumerated

    def _grow(self, done: list, rejected: dict) -> None:
        """Uniform draws up to `pool` at first; then mutations of the front and a few uniform."""
        if self._enumerate(rejected):
            return
        want = max(0, self.options["pool"] - len(self.pool))
        n_new = self.options["candidates"]
        parents = [c for _, c in _front(done, self.sign, self._smoothed)]
        if not parents:                       # every trial so far was stopped early
            want += n_new - n_new // 4
        draws = [DecisionTrial(self.rng) for _ in range(want + n_new // 4)]
        for _ in range(n_new - n_new // 4 if parents else 0):
            parent = self.rng.choice(parents)["params"]
            names = self.rng.sample(sorted(parent), k=min(len(parent), self.rng.choice((1, 1, 2))))
            draws.append(DecisionTrial(self.rng, parent, names))
        for draw in draws:
            cand, reason = self._candidate(draw)
            if reason is not None:
                count(rejected, reason)
            elif cand["hash"] not in self.pool:
                self.pool[cand["hash"]] = cand
        for old in list(itertools.islice(self.pool, max(0, len(self.pool) - POOL_MAX))):
            del self.pool[old]                # dicts keep insertion order: the oldest first

    def _score(self, done: list, running: list, fresh: list, stopped: list = ()) -> np.ndarray:
        """The acquisition of each fresh candidate (larger is better). Trials stopped early by
        successive halving (`stopped`) teach the score's model at the fidelity they reached
        (a feature of the model, 1 for every other row), never stand on the front."""
        n_stop = len(stopped)
        everything = [c for _, c in done] + [c for _, c in stopped] + running + fresh
        x = np.array([c["x"] for c in everything], dtype=float)
        if n_stop:
            reached = [_last_rung(t) for t, _ in stopped]
            full = max([b for b, _ in reached] + [max((float(k) for k in (t.user_attrs.get("rung_scores") or {})),
                                                      default=1.0) for t, _ in done])
            fidelity = np.ones(len(everything))
            fidelity[len(done):len(done) + n_stop] = [b / full for b, _ in reached]
            x = np.column_stack([x, fidelity])
        low, high = x.min(0), x.max(0)
        keep = high - low > 1e-9 * (1 + np.abs(x).max(0))
        # the GP's linear trend: in the log costs (config_features' last three) and the fidelity
        in_trend = np.arange(x.shape[1]) >= len(everything[0]["x"]) - len(TREND_COSTS)
        trend = list(np.flatnonzero(in_trend[keep]))
        x = (x[:, keep] - low[keep]) / (high - low)[keep]            # [0, 1], constant features out
        n_done, n_run = len(done), len(running)
        y = self.sign * np.array([t.values for t, _ in done], dtype=float).reshape(n_done, len(self.sign))
        exact = self.sign * np.array([[c["metrics"].get(m, np.nan) for m in self.objectives]
                                      for c in everything], dtype=float)
        mean, sd = exact.copy(), np.zeros_like(exact)
        noise = np.zeros(len(self.objectives))
        for i in self.modelled:
            if i == self.score and n_stop:
                rows = slice(0, n_done + n_stop)
                target = np.concatenate([y[:, i], self.sign[i] * np.array([v for _, v in reached])])
            else:
                rows, target = slice(0, n_done), y[:, i]
            gp = self._gp(i, x[rows], target, trend)
            mean[:, i], sd[:, i] = gp.predict(x)
            noise[i] = gp.noise_sd
        self._smoothed = {t.number: mean[k] for k, (t, _) in enumerate(done)}
        # the front: finished trials at the model's mean there (noise-aware: a lucky reading does
        # not stand as the front), running ones at their believed values
        keep = np.r_[np.arange(n_done), np.arange(n_done + n_stop, len(everything))]
        mean, sd = mean[keep], sd[keep]
        front = mean[:n_done + n_run]
        cand_mean, cand_sd = mean[n_done + n_run:], sd[n_done + n_run:]
        scale = np.maximum(np.nanmax(mean, 0) - np.nanmin(mean, 0), 1e-12)
        ref = np.nanmax(mean, 0) + 0.1 * scale
        for i in range(len(self.objectives)):
            if i not in self.modelled:
                ref[i] = np.nanmax(mean[:, i]) + 1e-6 * scale[i]
        acquisition = self._acquire(front / scale, ref / scale, cand_mean / scale, cand_sd / scale)
        acquisition = acquisition * augmentation(cand_sd, noise)
        return _weigh(acquisition, np.array([self.pricer.latency_odds(c["config"]) for c in fresh]))

    def _gp(self, objective: int, x: np.ndarray, y: np.ndarray, trend: Sequence[int] = ()) -> GaussianProcess:
        """The objective's GP on the finished trials: its kernel parameters optimised again
        whenever `REFIT_EVERY` trials have finished since the last optimisation (and for the
        first `n_startup` * 2 trials at every call), else conditioned on the new data only."""
        previous, fitted_at = self._hyper.get(objective, (None, 0))
        n = len(x)
        refit = previous is None or n - fitted_at >= REFIT_EVERY or n <= 2 * self.options["n_startup"]
        gp = GaussianProcess().fit(x, y, previous, refit=refit, trend=trend)
        self._hyper[objective] = (gp, n if refit else fitted_at)
        return gp

    def _acquire(self, front, ref, mean, sd) -> np.ndarray:
        if len(self.objectives) == 1:
            best = front[:, 0].min() if len(front) else ref[0]
            return expected_improvement_below(np.array([best]), mean[:, 0], np.maximum(sd[:, 0], 1e-9))
        return expected_hvi(front, ref, mean, sd)


def _weigh(acquisition: np.ndarray, odds: np.ndarray) -> np.ndarray:
    """The acquisition of candidates that may break the latency budget, weighed by the odds that
    they do not (the latency model's; 1 without one): constrained expected improvement. A score
    that can be negative (the Tchebycheff one) drops the candidates more likely over than not."""
    if np.all(odds >= 1.0):
        return acquisition
    if np.all(acquisition >= 0):
        return acquisition * odds
    return np.where(odds >= 0.5, acquisition, -np.inf)


def _stopped_early(t) -> bool:
    """A trial successive halving stopped: PRUNED within every budget, with a rung score."""
    return (t.state == TrialState.PRUNED and not t.user_attrs.get("infeasible")
            and bool(t.user_attrs.get("rung_scores")))


def _last_rung(t) -> tuple[float, float]:
    """(budget, score) of the last rung a trial reached."""
    scores = {float(k): float(v) for k, v in t.user_attrs["rung_scores"].items()}
    budget = max(scores)
    return budget, scores[budget]


def _feasible(t) -> bool:
    """No stored constraint of `t` is over its budget (`space.budgets`)."""
    return within(t.constraints)


def _front(done: list, sign: np.ndarray, smoothed: dict | None = None) -> list:
    """The (trial, candidate) pairs on the non-dominated front of the finished trials: at the
    model's mean where `smoothed` has it (trial number -> minimised values; a noisy reading's luck
    does not make a config a parent), else at their readings."""
    if not done:
        return []
    smoothed = smoothed or {}
    y = np.array([smoothed[t.number] if t.number in smoothed else sign * np.asarray(t.values, dtype=float)
                  for t, _ in done], dtype=float)
    out = []
    for i, row in enumerate(y):
        dominated = np.any(np.all(y <= row, axis=1) & np.any(y < row, axis=1))
        if not dominated:
            out.append(done[i])
    return out


def _proposal(cand: dict, rejected: dict) -> Proposal:
    return Proposal(dict(cand["params"]), dict(cand["distributions"]), cand["config"],
                    dict(cand["metrics"]), dict(rejected))
