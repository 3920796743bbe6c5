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


def test_the_product_reaches_optuna_internals_only_through_nas_optuna():
    """Every product module (nas/, reports/, overlock/, space/), not only the driver: an Optuna
    upgrade is checked in nas._optuna and the tests above."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    modules = [p for folder in ("nas", "reports", "overlock", "space") for p in (root / folder).rglob("*.py")]
    assert len(modules) > 60 and root / "nas" / "engine.py" in modules
    found = {}
    for path in modules:
        if path == root / "nas" / "_optuna.py":
            continue
        uses = re.findall(r"\._storage\b|\._trial_id\b|\._study_id\b|optuna\.Trial\(", path.read_text())
        if uses:
            found[str(path.relative_to(root))] = len(uses)
    assert found == {}
