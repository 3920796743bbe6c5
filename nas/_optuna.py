"""The engine's uses of Optuna's private API, in one place, each with the reason it is needed.

Optuna 5.0's public surface covers ask/tell, attributes and named constraints, but an ask/tell
driver that resumes other drivers' trials and writes constraints optuna-dashboard can read needs
a few internals. Everything that touches `study._storage`, `trial._trial_id` or `study._study_id`
lives here, so an Optuna upgrade is checked in one module (tests/nas/test_optuna_private.py pins
each behaviour relied on).

- `stored_trial(study, trial)`: the stored `FrozenTrial` of a live `Trial`, fresh from storage.
  `Trial` has no public way to re-read itself after `tell` (and `study.trials` copies every trial).
- `trial_by_number(study, number)`: a stored trial by number without copying all trials.
- `resume_trial(study, frozen)`: a `Trial` handle on a RUNNING trial another (dead) driver asked,
  so this driver can set its attributes and tell it; `optuna.Trial(study, trial_id)` is public,
  but the id it needs is private (`FrozenTrial._trial_id`).
- `create_running_trial(study, ...)`: a new RUNNING trial that holds its params and attributes
  from the start, in one storage write (`study.ask()` writes each param and attribute apart); the
  proposer (nas.search.proposals) has chosen the params already.
- `set_system_attr(study, trial, key, value)`, `set_user_attr(study, trial, key, value)`: on a
  `Trial` or a `FrozenTrial` (a sampler's `before_trial` gets the latter, which has no setter):
  Optuna 5 removed `Trial.set_system_attr`; the proposer's shadow study marks rejected draws and
  sets their constraints this way, and a proposed trial gets NSGA-II's generation.
- `NSGA2_GENERATION_KEY`: the system attribute in which `NSGAIISampler` stores a trial's
  generation (`BaseGASampler._get_generation_key()`); a proposed trial carries it onto the real
  study, so the shadow study rebuilt on resume keeps the generations.
- `is_queued(trial)`: a trial `study.enqueue_trial` queued (its params are fixed already); Optuna
  keeps them in the system attribute `fixed_params`, which has no public reader.
- `write_constraints(study, trial, values)`: constraints as the list `system_attrs["constraints"]`,
  the one place both readers look: Optuna 5's samplers read it (as constraints named '0', '1', ...)
  and optuna-dashboard (0.21 and later) reads *only* it to grey out infeasible trials. Optuna 5
  removed `Trial.set_system_attr`; only the storage-level setter is left. Writing named constraints
  (`Trial.set_constraint`) as well would make samplers see every budget twice
  (`{'0', '1', 'flops', 'latency_ms'}`), so a study writes one of the two formats:
  the list (studies created by this version) or, for studies that already hold named constraints
  (created by earlier versions), both, as they were written, so every trial of a study has the
  same constraints (GPSampler refuses trials whose constraint counts differ).

Readers never need this module: the stored format is read by `nas.storage.named_constraints`.
Everywhere else the product uses Optuna's public API only; tests/nas/test_optuna_private.py
finds a private name outside this module.
"""

from __future__ import annotations

from typing import Sequence

import optuna
from optuna.trial import FrozenTrial

# optuna.study._constrained_optimization._CONSTRAINTS_KEY: the legacy list, and the prefix of
# named constraints ("constraints:<name>")
CONSTRAINTS_KEY = "constraints"
# NSGAIISampler._get_generation_key(): a trial's generation (stored on real trials since 0.1)
NSGA2_GENERATION_KEY = "NSGAIISampler:generation"


def stored_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> FrozenTrial:
    """The trial as stored now (state, values, attributes), read from the study's storage."""
    return study._storage.get_trial(trial._trial_id)


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    """The stored trial numbered `number` in `study`."""
    storage = study._storage
    return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, number))


def resume_trial(study: optuna.Study, frozen: FrozenTrial) -> optuna.Trial:
    """A live handle on a stored RUNNING trial (left by a dead driver): set attrs on it, tell it."""
    return optuna.Trial(study, frozen._trial_id)


def create_running_trial(study: optuna.Study, params: dict, distributions: dict, *,
                         user_attrs: dict | None = None, system_attrs: dict | None = None) -> optuna.Trial:
    """A new RUNNING trial of `study` with these params (each in its distribution) and attributes.

    The study's sampler still sees `before_trial` (Optuna's `Trial` calls it); `suggest_*` of a
    param it holds returns the stored value without writing.
    """
    import datetime

    template = FrozenTrial(number=-1, state=optuna.trial.TrialState.RUNNING, value=None,
                           datetime_start=datetime.datetime.now(), datetime_complete=None,
                           params=dict(params), distributions=dict(distributions),
                           user_attrs=dict(user_attrs or {}), system_attrs=dict(system_attrs or {}),
                           intermediate_values={}, trial_id=-1)
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.Trial(study, trial_id)


def set_system_attr(study: optuna.Study, trial, key: str, value) -> None:
    """A system attribute of a `Trial` or a stored `FrozenTrial` of `study`."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def set_user_attr(study: optuna.Study, trial, key: str, value) -> None:
    """A user attribute of a `Trial` or a stored `FrozenTrial` of `study`."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def is_queued(trial: FrozenTrial) -> bool:
    """Whether `trial` was queued by `study.enqueue_trial` (its params are fixed already)."""
    return "fixed_params" in trial.system_attrs


def write_constraints(study: optuna.Study, trial: optuna.Trial, values: Sequence[float]) -> None:
    """Store `values` (one per budget, in the study's budget order) as the legacy constraint list.

    Later writes replace earlier ones (the list is one attribute); a finished trial cannot be
    changed (Optuna raises `UpdateFinishedTrialError`).
    """
    study._storage.set_trial_system_attr(trial._trial_id, CONSTRAINTS_KEY, [float(v) for v in values])


def has_named_constraints(trial: FrozenTrial) -> bool:
    """Whether a stored trial holds named constraints (`Trial.set_constraint`, "constraints:<name>"),
    as studies written before the single-format change do."""
    prefix = CONSTRAINTS_KEY + ":"
    return any(key.startswith(prefix) for key in trial.system_attrs)


# ------------------------------------------------------------------------------------------
# Optuna's Gaussian process and box decomposition, for the `frontier` sampler
# (nas.search.frontier). Both are private modules of Optuna (`optuna._gp`, `optuna._hypervolume`),
# maintained there for GPSampler and unchanged between 5.0 and 5.1; frontier uses them through
# these four functions only, and tests/nas/test_optuna_private.py pins what it relies on.
def gp_fit(x, y, previous=None, noise_rate: float | None = None):
    """An ARD Matern-5/2 GP with a learned noise variance fitted to `x` (n, d) in [0, 1] and `y`
    (n,) standardised, its kernel parameters chosen by maximum a posteriori by L-BFGS, starting
    from `previous` (a regressor of the same width) when given. The priors are Optuna's
    (`default_log_prior`), except with `noise_rate`: the noise variance's Gamma(1.1, rate) prior
    takes that rate instead of Optuna's 30 (`gp_log_prior`)."""
    import numpy as np
    from optuna._gp import gp as optuna_gp
    from optuna._gp import prior

    cache = previous if previous is not None and previous.inverse_squared_lengthscales.shape[0] == x.shape[1] \
        else None
    return optuna_gp.fit_kernel_params(
        X=np.ascontiguousarray(x, dtype=np.float64), Y=np.ascontiguousarray(y, dtype=np.float64),
        is_categorical=np.zeros(x.shape[1], dtype=bool),
        log_prior=prior.default_log_prior if noise_rate is None else gp_log_prior(noise_rate),
        minimum_noise=prior.DEFAULT_MINIMUM_NOISE_VAR, deterministic_objective=False,
        gpr_cache=cache)


def gp_log_prior(noise_rate: float):
    """The log prior of Optuna's GP (`optuna._gp.prior.default_log_prior`: its terms for the length
    scales and the kernel scale, as written there) with the noise variance's Gamma(1.1, 30) prior
    replaced by Gamma(1.1, `noise_rate`). Optuna's rate 30 (mean 0.037 of the standardised
    variance) suits GPSampler's mostly deterministic objectives; on readings that are half noise
    it holds the fitted noise near zero, and the GP interpolates the noise."""

    def log_prior(gpr):
        import torch

        def gamma_log_prior(value, concentration: float, rate: float):
            return (concentration - 1) * torch.log(value) - rate * value

        return (-(0.1 / gpr.inverse_squared_lengthscales + 0.1 * gpr.inverse_squared_lengthscales).sum()
                + gamma_log_prior(gpr.kernel_scale, 2, 1)
                + gamma_log_prior(gpr.noise_var, 1.1, noise_rate))

    return log_prior


def gp_refit_data(fitted, x, y):
    """A regressor with `fitted`'s kernel parameters on new data (no optimisation: one Cholesky)."""
    import numpy as np
    import torch
    from optuna._gp import gp as optuna_gp

    gpr = optuna_gp.GPRegressor(
        is_categorical=torch.zeros(x.shape[1], dtype=torch.bool),
        X_train=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)),
        y_train=torch.from_numpy(np.ascontiguousarray(y, dtype=np.float64)),
        inverse_squared_lengthscales=fitted.inverse_squared_lengthscales.detach().clone(),
        kernel_scale=fitted.kernel_scale.detach().clone(), noise_var=fitted.noise_var.detach().clone())
    gpr._cache_matrix()
    return gpr


def gp_posterior(gpr, x, chunk: int = 256):
    """Posterior mean and variance of the latent function at `x` (n, d), in chunks of `chunk` rows
    (Optuna's kernel holds an (n, n_train, d) tensor of squared differences)."""
    import numpy as np
    import torch

    means, variances = [], []
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            m, v = gpr.posterior(torch.from_numpy(np.ascontiguousarray(x[i:i + chunk], dtype=np.float64)))
            means.append(m.numpy())
            variances.append(v.numpy())
    if not means:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(means), np.concatenate(variances)


def gp_parameters(gpr) -> dict:
    """The fitted kernel parameters, as plain numbers (length scales per feature, noise)."""
    return {"length_scales": [float(v) for v in gpr.length_scales],
            "kernel_scale": float(gpr.kernel_scale), "noise_var": float(gpr.noise_var)}


def nondominated_boxes(points, ref):
    """Disjoint boxes (lower, upper), each (B, d), whose union is the region below `ref` that no
    point of `points` (n, d; minimised; each strictly below `ref`) dominates (Lacour et al. 2017,
    Optuna's port of BoTorch's). Lower bounds may be -inf."""
    import numpy as np
    from optuna._hypervolume import get_non_dominated_box_bounds

    return get_non_dominated_box_bounds(np.asarray(points, dtype=float), np.asarray(ref, dtype=float))
