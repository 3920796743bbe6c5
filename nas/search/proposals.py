"""Proposals: the params of a study's next trial, drawn only inside its exact budgets.

FLOPs, params and memory are exact and free (`space.complexity`, about 1 ms), so a config over
one of those budgets never becomes a trial: the proposer draws, prices each draw, rejects the
ones over a budget (and, with `latency: {model: ...}`, the ones predicted over the latency
budget by more than the model's margin) and hands the first config within every budget to the
study. With a latency model, the config about to be handed over is measured first when the model
cannot place it within the latency budget (`Pricer.confirm`, `latency.measure_first`): one
measured over it is a rejected draw too, so trials over a latency budget are only configs the
model placed within it by its margin and that a measurement then put over. The study's sampler
is `ProposalSampler`, which serves those params to `study.ask()`; each new trial records how many
draws were rejected for it, per reason (user attribute `rejected_draws`, docs/reference/storage.md).

Where the draws come from (`make_proposer`):

- an Optuna sampler (`nsga2`, `tpe`, `gp`, `random`) samples in a *shadow* study: an in-memory
  copy of the real study's finished trials, kept up to date before every proposal. A rejected
  draw is told to the shadow in the form that sampler learns from (see `REJECTED_FORM`):
  - `tpe`: PRUNED with its constraint values. TPE puts a trial with a positive constraint value
    in its "above" (bad) group before it looks at the state, so the region is learnt as bad.
  - `gp`: COMPLETE with its constraint values (GPSampler fits its constraint models only on
    COMPLETE trials). Its objective values are the exact costs where an objective is one and,
    for the others, the values of the nearest finished trial (a "believer": the objective model
    is barely moved, the constraint model learns where the budget lies).
  - `nsga2`: FAIL, which no GA sampler counts: every generation is made of real trials, all of
    them within the exact budgets, with Optuna's plain `NSGAIISampler` (its generation and
    population are read from COMPLETE trials only, in Optuna 5.0 and 5.1 alike).
  - `random`: PRUNED (it learns nothing); drawing uniformly and rejecting is `space.sample_feasible`.
- `frontier` (nas.search.frontier): the project's own strategy; it prices candidates itself.

The contract every proposer keeps (`Proposal`, `Pricer`, the rejection reasons, `ProposalError`)
is `nas.search.contract` (its names are importable from here too); `make_proposer` here is the
one module that imports the proposers.

Resume: the shadow is rebuilt from storage (every finished trial, with its constraints and its
NSGA-II generation, which the real trial carries). Draws rejected by an earlier process are lost
(only their counts, on the trials they preceded, remain); rejecting again costs a millisecond.
"""

from __future__ import annotations

import random
import warnings
from typing import Any, Callable, Sequence

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from nas import _optuna
from nas.util import derived_seed

# the proposal contract, importable from here as before (nas.search.contract)
from .contract import (EXACT_METRICS, INVALID_REASON, LATENCY_REASON, MAX_UNIFORM_DRAWS,  # noqa: F401
                       MEASURED_LATENCY_REASON, REASONS, STORED_LATENCY_REASON, Pricer, Proposal,
                       ProposalError, count)

REJECTED_ATTR = "rejected_draws"         # user attr of a trial: {reason: draws rejected before it}
SHADOW_REJECTED_KEY = "nas:rejected"     # system attr of a shadow trial that never reached the study
# how each sampler's shadow is told a rejected draw (the module docstring says why)
REJECTED_FORM = {"tpe": TrialState.PRUNED, "random": TrialState.PRUNED,
                 "gp": TrialState.COMPLETE, "nsga2": TrialState.FAIL}
MAX_DRAWS = 2_000        # draws for one trial before falling back to uniform rejection sampling
# proposals in a row that repeat an architecture of the study before the next one is drawn
# uniformly among new ones: GPSampler leaves a parameter whose range moves with the depth split
# out of its model and redraws it at random, so once its few values are all trained it can keep
# proposing them (635 of 798 draws in one measured study; docs/explanation/search.md)
MAX_REPEATS = 10


# --------------------------------------------------------------------------- the shadow study
def shadow_sampler(name: str, options: dict, seed: int) -> BaseSampler:
    """The Optuna sampler a shadow study samples with."""
    options = dict(options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, **options)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **options)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, **options)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler {name!r}: not one of nsga2, tpe, gp, random")


def _generation_attrs(system_attrs: dict) -> dict:
    key = _optuna.NSGA2_GENERATION_KEY
    return {key: system_attrs[key]} if key in system_attrs else {}


def _constraint_keys(system_attrs: dict) -> dict:
    return {k: v for k, v in system_attrs.items()
            if k == _optuna.CONSTRAINTS_KEY or k.startswith(_optuna.CONSTRAINTS_KEY + ":")}


class ShadowProposer:
    """Draws with an Optuna sampler in an in-memory shadow of the real study (module docstring).

    Args:
        space: the study's `SearchSpace`.
        sampler_name, options, seed: the sampler and its study-file options.
        directions: the study's directions; objectives: their metric names.
        pricer: a `Pricer` over the study's budgets.
        named_constraints: the real study stores named constraints too (begun by an old version).
    """

    def __init__(self, space, sampler_name: str, options: dict, seed: int, directions: Sequence[str],
                 objectives: Sequence[str], pricer: Pricer, *, named_constraints: bool = False):
        self.space, self.name, self.pricer = space, sampler_name, pricer
        self.objectives = list(objectives)
        self.named = named_constraints
        self.seed = seed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.shadow = optuna.create_study(directions=list(directions),
                                              sampler=shadow_sampler(sampler_name, options, seed))
        self._mirrored: set[int] = set()          # real trial numbers told to the shadow
        self._seen: set[str] = set()              # architectures of the real study (config hashes)
        self._repeats = 0                         # proposals in a row that repeated one of them
        self._bound: dict[int, int] = {}          # real trial number -> its shadow trial id
        self.fed = False      # the driver calls `observe` for every trial: never read the study
        self._uniform = random.Random(seed)

    # ------------------------------------------------------------------------------ sync
    def sync(self, study: optuna.Study) -> None:
        """Tell the shadow every real trial that finished since the last call (a proposer the
        driver does not feed through `observe` reads the study this way before each proposal)."""
        for t in study.get_trials(deepcopy=False):
            self.observe(t)

    def observe(self, t: FrozenTrial) -> None:
        """A real trial as stored now: once finished, it is told to the shadow (once)."""
        if t.user_attrs.get("config_hash"):
            self._seen.add(t.user_attrs["config_hash"])
        if t.number in self._mirrored or not t.state.is_finished():
            return
        self._mirrored.add(t.number)
        shadow_trial = self._bound.pop(t.number, None)
        if shadow_trial is not None:
            self._tell_bound(shadow_trial, t)
        elif t.state != TrialState.FAIL and t.params:
            self._add_copy(t)

    def _tell_bound(self, shadow_trial: optuna.Trial, real: FrozenTrial) -> None:
        for key, value in _constraint_keys(real.system_attrs).items():
            _optuna.set_system_attr(self.shadow, shadow_trial, key, value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if real.state == TrialState.COMPLETE:
                self.shadow.tell(shadow_trial, list(real.values))
            else:
                self.shadow.tell(shadow_trial, state=real.state)

    def _add_copy(self, real: FrozenTrial) -> None:
        attrs = {**_constraint_keys(real.system_attrs), **_generation_attrs(real.system_attrs)}
        values = list(real.values) if real.state == TrialState.COMPLETE else None
        copy = optuna.trial.create_trial(state=real.state, values=values, params=real.params,
                                         distributions=real.distributions, system_attrs=attrs)
        self.shadow.add_trial(copy)

    def bind(self, real_number: int, proposal: Proposal) -> None:
        """The real trial `real_number` was created from `proposal`."""
        if proposal.shadow_trial is not None:
            self._bound[real_number] = proposal.shadow_trial
        key = proposal.config.config_hash()
        self._repeats = self._repeats + 1 if key in self._seen else 0
        self._seen.add(key)

    # --------------------------------------------------------------------------- propose
    def propose(self, study: optuna.Study) -> Proposal:
        """The next trial's params, within every budget.

        Raises:
            ProposalError: no config within the budgets in `MAX_DRAWS` sampler draws and
                `MAX_UNIFORM_DRAWS` uniform ones.
        """
        if not self.fed:
            self.sync(study)
        rejected: dict[str, int] = {}
        if self._repeats >= MAX_REPEATS:
            found = self._new_architecture(rejected)
            if found is not None:
                return found
            self._repeats = 0         # none left to find, it seems: look again after as many
        for _ in range(MAX_DRAWS):
            found = self._draw(self.shadow, rejected)
            if found is not None:
                return found
        return self._uniform_fallback(rejected)

    def _draw(self, study: optuna.Study, rejected: dict[str, int]) -> Proposal | None:
        import space as space_pkg

        trial = study.ask()
        try:
            config = self.space.suggest(trial)
        except (space_pkg.SpaceError, ValueError):
            count(rejected, INVALID_REASON)
            self._reject(trial, INVALID_REASON, {}, {})
            return None
        reason, known, metrics = self.pricer.judge(config)
        if reason is None:
            reason = self.pricer.confirm(config, known)
        if reason is not None:
            count(rejected, reason)
            self._reject(trial, reason, known, metrics)
            return None
        stored = _optuna.stored_trial(self.shadow, trial)
        return Proposal(dict(trial.params), dict(trial.distributions), config, metrics,
                        dict(rejected), _generation_attrs(stored.system_attrs), trial)

    def _new_architecture(self, rejected: dict[str, int]) -> Proposal | None:
        """The sampler keeps repeating architectures of the study: a uniform draw within the
        budgets of one the study does not hold yet (None when MAX_DRAWS find none)."""
        sampler = self.shadow.sampler
        self.shadow.sampler = optuna.samplers.RandomSampler(seed=self._uniform.randrange(2 ** 31))
        try:
            for _ in range(MAX_DRAWS):
                found = self._draw(self.shadow, rejected)
                if found is not None and found.config.config_hash() not in self._seen:
                    return found
                if found is not None:
                    self._discard(found.shadow_trial)
        finally:
            self.shadow.sampler = sampler
        return None

    def _uniform_fallback(self, rejected: dict[str, int]) -> Proposal:
        """The sampler keeps drawing over budget: uniform draws (space.sample_feasible's way)."""
        sampler = self.shadow.sampler
        self.shadow.sampler = optuna.samplers.RandomSampler(seed=self._uniform.randrange(2 ** 31))
        try:
            for _ in range(MAX_UNIFORM_DRAWS):
                found = self._draw(self.shadow, rejected)
                if found is not None:
                    return found
        finally:
            self.shadow.sampler = sampler
        raise ProposalError(f"no config within the budgets {self.pricer.budgets} in "
                            f"{MAX_DRAWS + MAX_UNIFORM_DRAWS} draws ({_describe(rejected)}): "
                            "loosen a budget or widen the space")

    def discard(self, proposal: Proposal) -> None:
        """`proposal` will not become a trial (its caller proposes another)."""
        if proposal.shadow_trial is not None:
            self._discard(proposal.shadow_trial)

    def _discard(self, trial: optuna.Trial) -> None:
        """A shadow draw not proposed (a repeat drawn when a new architecture was wanted): FAIL,
        which no sampler reads."""
        _optuna.set_system_attr(self.shadow, trial, SHADOW_REJECTED_KEY, "repeat")
        self.shadow.tell(trial, state=TrialState.FAIL)

    def _reject(self, trial: optuna.Trial, reason: str, known: dict, metrics: dict) -> None:
        """Tell the shadow a rejected draw in the form its sampler learns from."""
        _optuna.set_system_attr(self.shadow, trial, SHADOW_REJECTED_KEY, reason)
        if reason == INVALID_REASON or REJECTED_FORM[self.name] == TrialState.FAIL:
            self.shadow.tell(trial, state=TrialState.FAIL)
            return
        for key, value in self.pricer.constraint_attrs(known, self.named).items():
            _optuna.set_system_attr(self.shadow, trial, key, value)
        values = self._stand_in_values(trial, metrics) if REJECTED_FORM[self.name] == TrialState.COMPLETE \
            else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if values is None:
                self.shadow.tell(trial, state=TrialState.PRUNED)
            else:
                self.shadow.tell(trial, values)

    def _stand_in_values(self, trial: optuna.Trial, metrics: dict) -> list[float] | None:
        """Objective values for a rejected draw told COMPLETE (`gp`): exact costs where an
        objective is one; otherwise the value of the nearest finished real trial (a believer).
        None before any real trial finished (then it is told PRUNED, which GP does not read)."""
        done = [t for t in self.shadow.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if SHADOW_REJECTED_KEY not in t.system_attrs]
        if not done:
            return None
        params = trial.params
        ref = min(done, key=lambda t: sum(t.params.get(k) != v for k, v in params.items()))
        fill = list(ref.values)
        return [float(metrics[m]) if m in metrics else fill[i] for i, m in enumerate(self.objectives)]


def _describe(rejected: dict[str, int]) -> str:
    return ", ".join(f"{n} over budget: {c}" if n not in (INVALID_REASON,) else f"invalid: {c}"
                     for n, c in sorted(rejected.items())) or "none"


# ------------------------------------------------------------------------- the real study's sampler
class ProposalSampler(BaseSampler):
    """The real study's sampler: `study.ask()` gets the params of `proposer.propose(study)`.

    A trial re-queued with fixed params (WAITING) keeps them: nothing is proposed for it. A new
    trial records `rejected_draws` (user attr) and the generation its draw belongs to (NSGA-II's
    system attr, read back when the shadow is rebuilt on resume).
    """

    def __init__(self, proposer):
        self.proposer = proposer
        self._current: Proposal | None = None
        self.last: Proposal | None = None      # the proposal served to the latest new trial

    def infer_relative_search_space(self, study, trial) -> dict:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._current = None
        if _optuna.is_queued(trial) or trial.params:   # queued, or created with params
            return
        if self.proposer.fed:     # the driver creates its new trials itself (Proposals.ask): this
            return                # is a trial it resumes, whose params are stored or re-queued
        proposal = self.proposer.propose(study)
        self._current = self.last = proposal
        self.proposer.bind(trial.number, proposal)
        _optuna.set_user_attr(study, trial, REJECTED_ATTR, dict(proposal.rejected))
        for key, value in proposal.system_attrs.items():
            _optuna.set_system_attr(study, trial, key, value)

    def sample_independent(self, study, trial, param_name: str, param_distribution) -> Any:
        proposal = self._current
        if proposal is None or param_name not in proposal.params:
            # a queued trial asking a param it was not given, or a space that changed its mind:
            # a uniform value (the config is priced again by the engine before training)
            return optuna.samplers.RandomSampler().sample_independent(
                study, trial, param_name, param_distribution)
        return proposal.params[param_name]

    def after_trial(self, study, trial, state, values) -> None:
        pass


class Proposals:
    """What the driver asks for a new trial: `ask(study)` creates it with the params the proposer
    drew within the budgets, `rejected_draws` and its generation, in one storage write; `sampler`
    is the study's sampler, so a plain `study.ask()` (a queued trial) goes through it too."""

    def __init__(self, proposer):
        self.proposer = proposer
        self.sampler = ProposalSampler(proposer)
        self.draws = 0                             # this process: every draw, accepted or not
        self.rejected: dict[str, int] = {}         # ... and the rejected ones, per reason

    def start(self, trials: Sequence[FrozenTrial]) -> None:
        """The driver's stored trials, read once: from now on it calls `observe` after every
        tell, and the proposer never reads the study itself (no scan per trial)."""
        self.proposer.fed = True
        for t in trials:
            self.proposer.observe(t)

    def observe(self, trial: FrozenTrial) -> None:
        """A trial of the study as stored now (the driver calls it after every tell)."""
        self.proposer.observe(trial)

    def ask(self, study: optuna.Study) -> optuna.Trial:
        """A new RUNNING trial within every budget.

        Raises:
            ProposalError: no config within the budgets could be drawn.
        """
        proposal = self.proposer.propose(study)
        trial = _optuna.create_running_trial(study, proposal.params, proposal.distributions,
                                             user_attrs={REJECTED_ATTR: dict(proposal.rejected)},
                                             system_attrs=proposal.system_attrs)
        self.proposer.bind(trial.number, proposal)
        if self.proposer.fed:
            self.proposer.observe(_optuna.stored_trial(study, trial))
        self.sampler.last = proposal
        self.draws += 1 + sum(proposal.rejected.values())
        for reason, n in proposal.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n
        return trial

    def describe(self) -> str | None:
        """The share of this run's draws rejected, per reason, in one line (None: no draw)."""
        return shares_line(self.draws, self.rejected)

    @property
    def rejected_architectures(self) -> set[str]:
        """Hashes of the architectures this run found over a budget (they never become trials:
        the driver counts them with its trials' to tell when the space is exhausted)."""
        return self.proposer.pricer.rejected_hashes


def for_study(spec, n_stored: int, budgets: dict[str, float], *, latency_screen=None,
              latency_confirm=None, latency_odds=None, latency_prefetch=None,
              named_constraints: bool = False) -> Proposals:
    """The proposals of a study file's `sampler`, seeded from (seed, stored trials) so a resumed
    study never replays. `budgets`: {metric: budget} in the order the study stores them."""
    seed = derived_seed(spec.seed, n_stored)
    return Proposals(make_proposer(spec.space, spec.sampler_name, dict(spec.sampler_options), seed,
                                   spec.directions, spec.objectives, budgets,
                                   latency_screen=latency_screen, latency_confirm=latency_confirm,
                                   latency_odds=latency_odds, latency_prefetch=latency_prefetch,
                                   named_constraints=named_constraints))


def make_proposer(space, sampler_name: str, options: dict, seed: int, directions: Sequence[str],
                  objectives: Sequence[str], budgets: dict[str, float], *,
                  latency_screen: Callable | None = None, latency_confirm: Callable | None = None,
                  latency_odds: Callable | None = None, latency_prefetch: Callable | None = None,
                  named_constraints: bool = False):
    """The proposer for a study's sampler name (`frontier` or an Optuna sampler's)."""
    pricer = Pricer(budgets, latency_screen, latency_confirm, latency_odds, latency_prefetch)
    if sampler_name == "frontier":
        from .frontier import FrontierProposer

        starter = ShadowProposer(space, "random", {}, seed, directions, objectives, pricer,
                                 named_constraints=named_constraints)
        return FrontierProposer(space, options, seed, directions, objectives, pricer, starter)
    return ShadowProposer(space, sampler_name, options, seed, directions, objectives, pricer,
                          named_constraints=named_constraints)


def rejected_shares(trials: Sequence[FrozenTrial]) -> tuple[int, dict[str, int]]:
    """(draws in all, {reason: draws rejected}) over the trials' `rejected_draws`: every trial
    that recorded it is one accepted draw."""
    total, by_reason = 0, {}
    for t in trials:
        found = t.user_attrs.get(REJECTED_ATTR)
        if not isinstance(found, dict):
            continue
        total += 1
        for reason, n in found.items():
            by_reason[reason] = by_reason.get(reason, 0) + int(n)
            total += int(n)
    return total, by_reason


def describe_rejected(trials: Sequence[FrozenTrial]) -> str | None:
    """One line for the CLI summary: the share of draws rejected, per reason (None when no trial
    recorded its draws, e.g. a study begun by an older version)."""
    return shares_line(*rejected_shares(trials))


def shares_line(total: int, by_reason: dict[str, int]) -> str | None:
    """`draws rejected before training: R of N (x%): flops y%, ...` (None when N is 0)."""
    if not total:
        return None
    rejected = sum(by_reason.values())
    parts = ", ".join(f"{reason} {n / total:.1%}" for reason, n in
                      sorted(by_reason.items(), key=lambda kv: -kv[1]) if n)
    text = f"draws rejected before training: {rejected} of {total} ({rejected / total:.1%})"
    return text + (f": {parts}" if parts else "")
