"""`frontier`: a search strategy that uses the exact cost model (study file `sampler: frontier`).

Every objective that is a cost (flops, flops_paper, params, memory_mb) is known exactly before
training, so only the others (the accuracy, a measured latency) need a model. Each proposal:

1. keeps a pool of candidate configs within every budget, priced exactly: uniform draws at first,
   then each proposal adds mutations (one or two decisions changed) of the configs on the current
   front, and a few uniform draws, so the pool is densest where the front is;
2. fits a Gaussian process (a linear plus RBF kernel on standardised config features, its scales
   chosen by marginal likelihood) to the finished trials, for each objective the cost model does
   not give;
3. picks the unseen candidate with the largest expected hypervolume improvement over the front
   (exact, for one modelled objective beside up to three costs; with several modelled objectives
   a random-weight Tchebycheff score of an optimistic bound). Trials still running count as points of the front at their
   predicted values, so parallel proposals spread out.

The first `n_startup` trials are uniform draws within the budgets. An architecture already in the
study is never proposed again. Candidates priced over a budget are the strategy's rejected draws.
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

import numpy as np
import optuna
from scipy.linalg import cho_solve, solve_triangular
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from space.budgets import within

from .contract import (EXACT_METRICS, INVALID_REASON, MAX_UNIFORM_DRAWS, Pricer, Proposal,
                       ProposalError, count)

DEFAULTS = {"n_startup": 10, "candidates": 16, "pool": 192, "explore": 0.0}
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
    out += [math.log(max(metrics[m], 1e-9)) for m in ("flops", "params", "memory_mb")]
    return out


class GaussianProcess:
    """Exact GP regression, kernel `w_lin * x.x'/d + RBF(l)` plus noise, on standardised inputs;
    (w_lin, l, noise) from a small grid by marginal likelihood."""

    GRID = [(w, l, n) for w in (0.0, 0.5) for l in (0.5, 1.0, 2.0) for n in (1e-3, 1e-2, 1e-1)]

    def fit(self, x: np.ndarray, y: np.ndarray, hyper: tuple | None = None) -> "GaussianProcess":
        self.x, self.d = x, max(1, x.shape[1])
        self.y_mean, self.y_std = float(y.mean()), float(y.std()) or 1.0
        z = (y - self.y_mean) / self.y_std
        best = None
        for w, l, noise in ([hyper] if hyper else self.GRID):
            k = self._kernel(x, x, w, l) + noise * np.eye(len(x))
            try:
                chol = np.linalg.cholesky(k)
            except np.linalg.LinAlgError:
                continue
            alpha = cho_solve((chol, True), z)
            lml = -0.5 * z @ alpha - np.log(np.diag(chol)).sum()
            if best is None or lml > best[0]:
                best = (lml, (w, l, noise), chol, alpha)
        _, self.hyper, self.chol, self.alpha = best
        return self

    def _kernel(self, a: np.ndarray, b: np.ndarray, w: float, l: float) -> np.ndarray:
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        length = l * math.sqrt(self.d)
        return w * (a @ b.T) / self.d + np.exp(-0.5 * np.maximum(sq, 0) / length ** 2)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w, l, _ = self.hyper
        ks = self._kernel(x, self.x, w, l)
        mean = ks @ self.alpha
        v = solve_triangular(self.chol, ks.T, lower=True, check_finite=False)
        prior = w * (x * x).sum(1) / self.d + 1.0
        var = np.maximum(prior - (v * v).sum(0), 1e-12)
        return mean * self.y_std + self.y_mean, np.sqrt(var) * self.y_std


# ------------------------------------------------------------------------------- acquisition
def _norm_pdf(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _norm_cdf(z):
    from scipy.special import ndtr

    return ndtr(z)


def expected_improvement_below(g: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """E[max(0, g - U)] for U ~ N(mean, sd) (broadcast)."""
    z = (g - mean) / sd
    return (g - mean) * _norm_cdf(z) + sd * _norm_pdf(z)


def ehvi(front: np.ndarray, ref: np.ndarray, mean: np.ndarray, sd: np.ndarray,
         cost: np.ndarray, max_cells: int = 4_000_000) -> np.ndarray:
    """Expected hypervolume improvement, every objective minimised: the first ~ N(mean, sd), the
    others (`cost`, shape (N, c)) exact. `front`: (n, 1 + c) points; `ref`: the reference point.

    Exact: the cost space is cut into the grid of cells the front's coordinates make; in each cell
    the front dominates the first objective down to a level g, so the gain there is the cell's
    volume above the candidate's costs times E[max(0, g - U)]. Two facts keep it cheap with a
    3-objective front of a hundred points (10^4 cells, thousands of candidates): a cell's volume
    above a candidate is a product of one side per cost axis, and the levels take at most n + 1
    values, so the Gaussian terms are computed per level, not per cell.
    """
    pts = front[np.all(front < ref, axis=1)]
    c_dims = cost.shape[1]
    edges = [np.concatenate([[-np.inf], np.unique(pts[:, 1 + j]), [ref[1 + j]]]) for j in range(c_dims)]
    grid = np.meshgrid(*[e[:-1] for e in edges], indexing="ij")
    lower = np.stack([g.ravel() for g in grid], 1)                              # (cells, c)
    covers = np.all(pts[None, :, 1:] <= lower[:, None, :], axis=2)              # (cells, n)
    level = np.where(covers, pts[None, :, 0], ref[0]).min(1) if len(pts) else np.full(len(lower), ref[0])
    levels, which = np.unique(level, return_inverse=True)                       # which: (cells,)
    which = which.reshape(grid[0].shape)
    letters = "abc"[:c_dims]
    spec = ",".join(f"n{x}" for x in letters) + f",n{letters}->n"
    out = np.zeros(len(cost))
    step = max(1, max_cells // max(1, which.size))
    for i in range(0, len(cost), step):
        c, m, s = cost[i:i + step], mean[i:i + step], np.maximum(sd[i:i + step], 1e-9)
        # side j of every cell above each candidate: (N, cells along axis j)
        sides = [np.clip(e[None, 1:] - np.maximum(c[:, j:j + 1], e[None, :-1]), 0, None)
                 for j, e in enumerate(edges)]
        gain = expected_improvement_below(levels[None], m[:, None], s[:, None])   # (N, levels)
        out[i:i + step] = np.einsum(spec, *sides, gain[:, which])
    return out


def _nondominated(points: np.ndarray) -> np.ndarray:
    keep = np.ones(len(points), dtype=bool)
    for i, p in enumerate(points):
        if keep[i]:
            dominated = np.all(points >= p, axis=1) & np.any(points > p, axis=1)
            keep &= ~dominated
    return points[keep]


# ---------------------------------------------------------------------------------- proposer
class FrontierProposer:
    """The `frontier` strategy (module docstring). Options: `n_startup` uniform trials first,
    `candidates` new candidates per proposal, `pool` candidates drawn at the start, `explore`
    the share of proposals drawn uniformly from the pool."""

    def __init__(self, space, options: dict, seed: int, directions: Sequence[str],
                 objectives: Sequence[str], pricer: Pricer):
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
        self.pool: dict[str, dict] = {}           # config hash -> candidate within budgets
        self._known: dict[int, dict] = {}         # real trial number -> its config's candidate
        self._hyper: dict[int, tuple] = {}
        self.enumerated = False                   # the pool holds the whole space within budget
        self.fed = False      # the driver calls `observe` for every trial: never read the study
        self._trials: dict[int, Any] = {}         # number -> the trial as last observed
        self.space_size = _size(space)

    def bind(self, real_number: int, proposal: Proposal) -> None:
        pass                                      # the trial itself comes through `observe`

    def observe(self, t) -> None:
        """A trial of the study as stored now (the driver feeds every one, `fed`)."""
        self._trials[t.number] = t

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
        rejected: dict[str, int] = {}
        if len(done) < self.options["n_startup"] or not self.modelled and not done:
            return self._uniform(seen, rejected)
        self._grow(done, rejected)
        fresh = [c for h, c in self.pool.items() if h not in seen]
        if not fresh:
            return self._uniform(seen, rejected)
        if self.rng.random() < self.options["explore"]:
            order = self.rng.sample(range(len(fresh)), len(fresh))
        else:
            running = [c for t, c in trials if t.state == TrialState.RUNNING]
            scores = self._score(done, running, fresh)
            order = np.argsort(-scores, kind="stable")
        for i in order:       # the best one a latency check does not put over the budget
            if self._confirmed(fresh[i], rejected):
                return _proposal(fresh[i], rejected)
        return self._uniform(seen, rejected)

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
        parents = [c for _, c in _front(done, self.sign)]
        draws = [DecisionTrial(self.rng) for _ in range(want + n_new // 4)]
        for _ in range(n_new - n_new // 4):
            parent = self.rng.choice(parents)["params"]
            names = self.rng.sample(sorted(parent), k=min(len(parent), self.rng.choice((1, 1, 2))))
            draws.append(DecisionTrial(self.rng, parent, names))
        for draw in draws:
            cand, reason = self._candidate(draw)
            if reason is not None:
                count(rejected, reason)
            elif cand["hash"] not in self.pool:
                self.pool[cand["hash"]] = cand

    def _score(self, done: list, running: list, fresh: list) -> np.ndarray:
        """The acquisition of each fresh candidate (larger is better)."""
        everything = [c for _, c in done] + running + fresh
        x = np.array([c["x"] for c in everything], dtype=float)
        spread = x.std(0)
        keep = spread > 1e-9 * (1 + np.abs(x).max(0))
        x = (x[:, keep] - x[:, keep].mean(0)) / spread[keep]
        n_done, n_run = len(done), len(running)
        y = self.sign * np.array([t.values for t, _ in done], dtype=float)     # minimised
        exact = self.sign * np.array([[c["metrics"].get(m, np.nan) for m in self.objectives]
                                      for c in everything], dtype=float)
        mean, sd = exact.copy(), np.zeros_like(exact)
        for i in self.modelled:
            gp = GaussianProcess().fit(x[:n_done], y[:, i], self._refit(i, n_done))
            self._hyper[i] = (gp.hyper, n_done)
            mean[n_done:, i], sd[n_done:, i] = gp.predict(x[n_done:])
            mean[:n_done, i] = y[:, i]
        front = np.concatenate([y, mean[n_done:n_done + n_run]])     # running: believed values
        cand_mean, cand_sd = mean[n_done + n_run:], sd[n_done + n_run:]
        scale = np.maximum(np.nanmax(mean, 0) - np.nanmin(mean, 0), 1e-12)
        ref = np.nanmax(mean, 0) + 0.1 * scale
        for i in range(len(self.objectives)):
            if i not in self.modelled:
                ref[i] = np.nanmax(mean[:, i]) + 1e-6 * scale[i]
        acquisition = self._acquire(front / scale, ref / scale, cand_mean / scale, cand_sd / scale)
        return _weigh(acquisition, np.array([self.pricer.latency_odds(c["config"]) for c in fresh]))

    def _refit(self, objective: int, n_done: int) -> tuple | None:
        """Reuse the kernel's scales for a while: refit them every 10 new trials."""
        found = self._hyper.get(objective)
        return found[0] if found and n_done - found[1] < 10 and n_done > found[1] else None

    def _acquire(self, front, ref, mean, sd) -> np.ndarray:
        m = len(self.objectives)
        if m == 1:
            best = front[:, 0].min() if len(front) else ref[0]
            return expected_improvement_below(np.array([best]), mean[:, 0], np.maximum(sd[:, 0], 1e-9))
        if len(self.modelled) == 1 and m <= 4:
            u = self.modelled[0]
            order = [u] + [k for k in range(m) if k != u]
            return ehvi(front[:, order], ref[order], mean[:, u], sd[:, u], mean[:, order[1:]])
        # several modelled objectives: a random-weight Tchebycheff score of an optimistic value
        # (mean - sd), relative to the reference point
        weights = np.array([self.rng.expovariate(1.0) for _ in range(m)])
        weights /= weights.sum()
        optimistic = mean - sd
        return -np.max(weights * (optimistic - (ref - 1.0)), axis=1)


def _weigh(acquisition: np.ndarray, odds: np.ndarray) -> np.ndarray:
    """The acquisition of candidates that may break the latency budget, weighed by the odds that
    they do not (the latency model's; 1 without one): constrained expected improvement. A score
    that can be negative (the Tchebycheff one) drops the candidates more likely over than not."""
    if np.all(odds >= 1.0):
        return acquisition
    if np.all(acquisition >= 0):
        return acquisition * odds
    return np.where(odds >= 0.5, acquisition, -np.inf)


def _size(space) -> int | None:
    try:
        return space.size()
    except Exception:  # noqa: BLE001 - too many paths to count, or continuous
        return None


def _feasible(t) -> bool:
    """No stored constraint of `t` is over its budget (`space.budgets`)."""
    return within(t.constraints)


def _front(done: list, sign: np.ndarray) -> list:
    """The (trial, candidate) pairs on the non-dominated front of the finished trials."""
    if not done:
        return []
    y = sign * np.array([t.values for t, _ in done], dtype=float)
    out = []
    for i, row in enumerate(y):
        dominated = np.any(np.all(y <= row, axis=1) & np.any(y < row, axis=1))
        if not dominated:
            out.append(done[i])
    return out


def _proposal(cand: dict, rejected: dict) -> Proposal:
    return Proposal(dict(cand["params"]), dict(cand["distributions"]), cand["config"],
                    dict(cand["metrics"]), dict(rejected))
