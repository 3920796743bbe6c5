"""What `nas._optuna` relies on in Optuna's private API, pinned (an Optuna upgrade fails here first)."""

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY, _get_feasible_trials

from nas import _optuna


@pytest.fixture(params=["journal", "sqlite"])
def study(request, tmp_path):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "study.log"))) \
        if request.param == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    return optuna.create_study(study_name="s", storage=storage, directions=["minimize", "minimize"])


def test_the_constraint_list_is_what_samplers_and_the_dashboard_read(study):
    assert _optuna.CONSTRAINTS_KEY == _CONSTRAINTS_KEY
    trials = []
    for violations in ([-1.0, 0.0], [2.0, -3.0]):
        trial = study.ask()
        _optuna.write_constraints(study, trial, violations)
        study.tell(trial, [1.0, 2.0])
        trials.append(_optuna.stored_trial(study, trial))
    feasible, infeasible = trials
    assert feasible.constraints == {"0": -1.0, "1": 0.0}          # one key per budget
    assert infeasible.system_attrs["constraints"] == [2.0, -3.0]  # optuna-dashboard's read
    assert _get_feasible_trials(trials) == [feasible]
    assert not _optuna.has_named_constraints(feasible)


def test_a_later_write_replaces_the_list_and_named_constraints_are_seen(study):
    trial = study.ask()
    _optuna.write_constraints(study, trial, [1.0])
    _optuna.write_constraints(study, trial, [-1.0])
    trial.set_constraint("flops", -1.0)                            # what earlier versions also wrote
    frozen = _optuna.stored_trial(study, trial)
    assert frozen.constraints == {"0": -1.0, "flops": -1.0}
    assert _optuna.has_named_constraints(frozen)


def test_another_driver_resumes_a_running_trial_by_number(study):
    asked = study.ask()
    asked.set_user_attr("config_hash", "abc")
    reopened = optuna.load_study(study_name="s", storage=study._storage)
    frozen = _optuna.trial_by_number(reopened, asked.number)
    assert frozen.user_attrs == {"config_hash": "abc"}
    live = _optuna.resume_trial(reopened, frozen)
    live.set_user_attr("epochs", 3)
    reopened.tell(live, [1.0, 1.0])
    done = _optuna.stored_trial(reopened, live)
    assert done.state.name == "COMPLETE" and done.user_attrs["epochs"] == 3
    with pytest.raises(UpdateFinishedTrialError):   # why the engine writes every attr before tell
        live.set_user_attr("reason", "too late")


def test_the_generation_key_and_the_queue_are_optunas():
    assert _optuna.NSGA2_GENERATION_KEY == optuna.samplers.NSGAIISampler._get_generation_key()
    study = optuna.create_study(sampler=optuna.samplers.NSGAIISampler(population_size=2, seed=0))
    study.enqueue_trial({"x": 1})
    queued = study.ask()
    fresh = study.ask()
    queued.suggest_int("x", 0, 3)
    assert _optuna.is_queued(_optuna.stored_trial(study, queued)) and queued.params == {"x": 1}
    fresh.suggest_int("x", 0, 3)
    study.tell(fresh, 1.0)
    stored = _optuna.stored_trial(study, fresh)
    assert not _optuna.is_queued(stored) and _optuna.NSGA2_GENERATION_KEY in stored.system_attrs


# found anywhere (an override, a getattr): what earlier versions reached
PRIVATE_NAMES = ("_get_trials", "_get_generation_key", "_get_parent_cache_key_prefix", "_backend")
# found as `x._name` whatever the product defines (a leading-underscore attribute of an Optuna
# object is found by name too, read from the objects; a key Optuna keeps private has none)
PRIVATE_ATTRIBUTES = ("_storage", "_trial_id", "_study_id")
PRIVATE_PATTERN = (r"optuna\.Trial\(|\bfixed_params\b"           # a trial by its private id; the queue key
                   r"|\bfrom\s+optuna(?:\.\w+)*\._\w+"                # from a private module
                   r"|\bfrom\s+optuna(?:\.\w+)*\s+import\s+\(?\s*_\w+"  # a private name of a public one
                   r"|\boptuna(?:\.\w+)*\._\w+")                       # optuna.x._private


def _optuna_private_attributes(tmp_path) -> set[str]:
    """Leading-underscore attributes of Optuna's objects (a study, a trial, a frozen trial,
    storages, every built-in sampler, a distribution), read from the objects themselves."""
    import warnings

    from optuna.storages import InMemoryStorage

    study = optuna.create_study(directions=["minimize"])
    trial = study.ask()
    trial.suggest_int("x", 0, 3)
    study.tell(trial, 1.0)
    backend = JournalFileBackend(str(tmp_path / "guard.log"))
    objects = [study, trial, study.trials[0], InMemoryStorage(), backend, JournalStorage(backend),
               optuna.distributions.IntDistribution(0, 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        objects += [cls() for cls in (optuna.samplers.NSGAIISampler, optuna.samplers.NSGAIIISampler,
                                      optuna.samplers.TPESampler, optuna.samplers.GPSampler,
                                      optuna.samplers.RandomSampler, optuna.samplers.QMCSampler,
                                      optuna.samplers.BruteForceSampler)]
    return {name for obj in objects for name in set(dir(obj)) | set(getattr(obj, "__dict__", {}))
            if name.startswith("_") and not name.startswith("__")}


def _guard(attributes: set[str]):
    """The pattern of a private use: PRIVATE_PATTERN, a name of PRIVATE_NAMES anywhere, or
    `x._name` for `_name` in `attributes` where x is not `self` or `cls`."""
    import re

    names = "|".join(sorted(map(re.escape, attributes), key=len, reverse=True))
    return re.compile(PRIVATE_PATTERN + r"|\b(?:" + "|".join(PRIVATE_NAMES) + r")\b"
                      + r"|(?<!\bself)(?<!\bcls)\.(?:" + names + r")\b")


def test_the_product_reaches_optuna_internals_only_through_nas_optuna(tmp_path):
    """Every product module (nas/, reports/, overlock/, space/), not only the driver: an Optuna
    upgrade is checked in nas._optuna and the tests above. Found: the names in PRIVATE_NAMES,
    any leading-underscore attribute of an Optuna object (`x._name` where `_name` is one; of the
    names the product defines itself, `_validate` say, only PRIVATE_ATTRIBUTES), Optuna's private
    modules and names, and `fixed_params`."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    modules = [p for folder in ("nas", "reports", "overlock", "space") for p in (root / folder).rglob("*.py")]
    assert len(modules) > 60 and root / "nas" / "engine.py" in modules
    texts = {p: p.read_text() for p in modules}
    own = {name for text in texts.values() for found in re.findall(
        r"(?:def|class)\s+(_\w+)|self\.(_\w+)\s*[:=]|^(_\w+)\s*[:=]", text, re.M) for name in found if name}
    attributes = (_optuna_private_attributes(tmp_path) - own) | set(PRIVATE_ATTRIBUTES)
    assert {"_storage", "_cached_frozen_trial", "_elite_population_selection_strategy"} <= attributes
    pattern = _guard(attributes)
    found = {}
    for path, text in texts.items():
        if path == root / "nas" / "_optuna.py":
            continue
        uses = [m.group(0) for m in pattern.finditer(text)]
        if uses:
            found[str(path.relative_to(root))] = uses
    assert found == {}


@pytest.mark.parametrize("line", [
    "study._storage.get_trial(1)", "trials = study._get_trials(deepcopy=False)",
    "key = NSGAIISampler._get_generation_key()", "backend = storage._backend",
    "sampler._elite_population_selection_strategy(study, population)", "rng = sampler._rng",
    'if "fixed_params" in trial.system_attrs:', "from optuna.study._constrained_optimization import x",
    "from optuna._gp import gp", "from optuna.samplers import _tpe", "optuna.samplers._tpe.sampler",
    "getattr(storage, '_backend', None)", "optuna.Trial(study, 3)"])
def test_the_guard_finds_each_kind_of_private_use(line, tmp_path):
    attributes = _optuna_private_attributes(tmp_path) | set(PRIVATE_ATTRIBUTES)
    pattern = _guard(attributes)
    assert pattern.search(line), line
    assert not pattern.search("self._rng = rng; trial.system_attrs['constraints']; study.trials")


def test_the_box_decomposition_covers_exactly_the_undominated_region():
    """`nondominated_boxes` (Optuna's box decomposition, for frontier's acquisition): disjoint
    boxes whose volume, clipped at a floor below every point, is the box [floor, ref] minus the
    hypervolume the points dominate."""
    import numpy as np

    def hypervolume(points, ref):                # by grid cells, any dimension
        edges = [np.unique(np.r_[points[:, j], ref[j]]) for j in range(points.shape[1])]
        lows = np.stack(np.meshgrid(*[e[:-1] for e in edges], indexing="ij"), -1).reshape(-1, len(ref))
        sizes = np.stack(np.meshgrid(*[np.diff(e) for e in edges], indexing="ij"), -1).reshape(-1, len(ref))
        covered = np.any(np.all(points[None] <= lows[:, None], axis=2), axis=1)
        return float(np.prod(sizes[covered], axis=1).sum())

    rng = np.random.default_rng(0)
    for d in (2, 3, 4):
        points = rng.random((12, d))
        ref, floor = np.full(d, 1.2), np.full(d, -0.5)
        lower, upper = _optuna.nondominated_boxes(points, ref)
        volume = np.prod(np.clip(upper - np.maximum(lower, floor), 0, None), axis=1).sum()
        assert volume == pytest.approx(1.7 ** d - hypervolume(points, ref), rel=1e-9)


def test_the_gaussian_process_fits_and_reconditions_with_the_same_parameters():
    """`gp_fit` (Optuna's GP regressor) learns from data; `gp_refit_data` keeps its kernel
    parameters on new data; `gp_posterior` chunks without changing a value."""
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.random((40, 3))
    y = np.sin(4 * x[:, 0]) + x[:, 1]
    y = (y - y.mean()) / y.std()
    fitted = _optuna.gp_fit(x, y)
    params = _optuna.gp_parameters(fitted)
    assert len(params["length_scales"]) == 3 and params["noise_var"] > 0
    again = _optuna.gp_refit_data(fitted, x, y)
    assert _optuna.gp_parameters(again) == params
    test = rng.random((30, 3))
    m1, v1 = _optuna.gp_posterior(fitted, test)
    m2, v2 = _optuna.gp_posterior(again, test, chunk=7)
    np.testing.assert_allclose(m1, m2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(v1, v2, rtol=1e-9, atol=1e-12)
    mean, _ = _optuna.gp_posterior(fitted, x)
    assert np.abs(mean - y).max() < 0.05


def test_the_noise_prior_is_optunas_prior_with_another_rate():
    """`gp_log_prior` restates Optuna's `default_log_prior` with the noise variance's rate as a
    parameter: at Optuna's rate 30 the two agree, so an Optuna upgrade that changes its prior
    fails here instead of leaving frontier's copy behind."""
    import numpy as np
    from optuna._gp import prior

    rng = np.random.default_rng(2)
    x = rng.random((30, 4))
    y = x[:, 0] - x[:, 2] + 0.3 * rng.standard_normal(30)
    fitted = _optuna.gp_fit(x, (y - y.mean()) / y.std(), noise_rate=5.0)
    ours, optunas = _optuna.gp_log_prior(30.0)(fitted), prior.default_log_prior(fitted)
    assert float(ours) == pytest.approx(float(optunas), rel=1e-12, abs=1e-12)
    assert float(_optuna.gp_log_prior(5.0)(fitted)) != pytest.approx(float(optunas))
