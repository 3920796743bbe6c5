"""The stored-study contract (`nas.storage`): one owner for metric names, directions, units and
labels, opening a study, objectives, metric values, "feasible", "full fidelity" and the front."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from nas import storage
from nas.storage import StorageError


def test_the_contract_and_its_readers_import_without_torch():
    """Reports and the report server stay light: the contract, the selection and the report
    modules never import torch (checked in a fresh interpreter)."""
    code = ("import sys, nas.storage, nas.selection, nas.study, reports.data, reports.page, reports.serve, "
            "nas.commands.report; print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.strip()
    assert out == "[]"


def test_one_table_of_directions():
    """Before: the directions were written in about seven places; now nas.study, the engine, the
    search CLI, selection and the reports read nas.storage's."""
    import nas.engine
    import nas.selection
    import nas.study
    import reports.metrics

    assert nas.study.DIRECTIONS is storage.DIRECTIONS is nas.engine.DIRECTIONS is nas.selection.DIRECTIONS
    assert nas.study.SCORE_METRICS == reports.metrics.SCORE_METRICS == ("accuracy", "synflow", "naswot", "zico")
    assert set(storage.CONSTRAINT_METRICS) == {m for m, d in storage.DIRECTIONS.items() if d == "minimize"}
    assert nas.engine._fmt is storage.format_value
    assert storage.format_value("flops", 4.2e9) == "4.2 GMACs" and storage.format_value("params", 3.1e6) == "3.1 M"
    assert storage.METRICS["flops"].label == "GMACs (fvcore; the paper's FLOPs)"


def test_macs_label_matches_space():
    import space

    for args in [((224, 224),), ((160, 256), 8), ((224, 224), 1, "paper")]:
        assert storage.macs_label(*args) == space.macs_label(*args)


# ------------------------------------------------------------------------------- journals
def _journal(tmp_path: Path, n: int = 3) -> Path:
    path = tmp_path / "study.log"
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
    return path


def test_check_journal_counts_records(tmp_path):
    path = _journal(tmp_path)
    assert storage.check_journal(path) == len(path.read_bytes().splitlines())


@pytest.mark.parametrize("cut", [1, 10, 30])
def test_truncated_journal_names_the_byte_and_the_repair(tmp_path, cut):
    path = _journal(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    start = data[:-1].rfind(b"\n") + 1
    with pytest.raises(StorageError) as info:
        storage.check_journal(path)
    message = str(info.value)
    assert "\n" not in message and "is truncated" in message and f"truncate -s {start} {path}" in message
    # the repair it names gives a journal Optuna reads, with every record before the cut
    path.write_bytes(data[:start])
    assert storage.check_journal(path) == len(data[:start].splitlines())
    optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))


@pytest.mark.parametrize("line, words", [
    (b"not json at all", "line 2 (byte"),
    (b'["a list"]', "no op_code"),
    (b"\xff\xfe", "line 2"),
])
def test_corrupt_journal_names_the_line(tmp_path, line, words):
    path = _journal(tmp_path)
    lines = path.read_bytes().split(b"\n")
    lines[1] = line
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(StorageError, match="is corrupt") as info:
        storage.open_storage(tmp_path)
    assert words in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- feasibility
def _study(tmp_path, budgets):
    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(tmp_path / "study.log"))),
                                directions=["maximize", "minimize"], study_name="c")
    study.set_user_attr("constraints", budgets)
    study.set_user_attr("objectives", [{"name": "accuracy", "direction": "maximize"},
                                       {"name": "flops", "direction": "minimize"}])
    return study


def _trial(study, values, attrs, legacy=None, named=None, state=TrialState.COMPLETE):
    trial = study.ask()
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    if legacy is not None:
        study._storage.set_trial_system_attr(trial._trial_id, "constraints", list(legacy))
    for k, v in (named or {}).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial.set_constraint(k, v)
    study.tell(trial, values) if state == TrialState.COMPLETE else study.tell(trial, state=state)
    return study.trials[-1]


def test_feasible_by_one_rule(tmp_path):
    budgets = {"flops": 100.0, "latency_ms": 5.0}
    study = _study(tmp_path, budgets)
    ok = _trial(study, [0.5, 50], {"latency_ms": 2.0}, legacy=[-50, -3])
    legacy_broken = _trial(study, [0.6, 50], {"latency_ms": 9.0}, legacy=[-50, 4])
    named_broken = _trial(study, [0.6, 50], {}, named={"flops": -50, "latency_ms": 1})
    unmeasured = _trial(study, [0.9, 50], {"flops": 50})           # no latency_ms, no constraint
    marked = _trial(study, [0.9, 50], {"infeasible": True, "latency_ms": 1}, legacy=[-1, -1])
    objectives = storage.study_objectives(study)
    b = storage.study_budgets(study)
    assert storage.feasibility(ok, b, objectives) == (True, "")
    assert storage.feasibility(legacy_broken, b, objectives) == (False, "breaks latency_ms")
    assert storage.named_constraints(legacy_broken, b) == {"flops": -50.0, "latency_ms": 4.0}
    assert storage.feasibility(named_broken, b, objectives) == (False, "breaks latency_ms")
    assert storage.feasibility(unmeasured, b, objectives) == (False, "has no latency_ms to check against its budget")
    assert storage.feasibility(marked, b, objectives) == (False, "marked infeasible")
    assert [t.number for t in storage.pareto_front(study)] == [0]


def test_fidelity_presets_and_objectives(tmp_path):
    study = _study(tmp_path, {})
    full = _trial(study, [0.5, 50], {})
    partial = _trial(study, [0.9, 10], {"fidelity": 1 / 3})
    preset = _trial(study, [0.99, 1], {"preset": "overlock_xt"})
    assert storage.full_fidelity(full) and not storage.full_fidelity(partial)
    assert storage.is_preset(preset)
    assert storage.study_objectives(study) == [("accuracy", "maximize"), ("flops", "minimize")]
    assert storage.study_objectives(study)[0].sign == -1.0
    assert storage.metric_value(full, "flops", storage.study_objectives(study)) == 50.0
    assert [t.number for t in storage.pareto_front(study)] == [0]


def test_open_study_from_run_dir_journal_and_url(tmp_path):
    _journal(tmp_path)
    assert storage.open_study(tmp_path)[0].study_name == "s"
    assert storage.open_study(storage=str(tmp_path / "study.log"))[0].study_name == "s"
    url = f"sqlite:///{tmp_path / 'x.db'}"
    optuna.create_study(study_name="r", storage=url)
    study, label = storage.open_study(storage=url)
    assert study.study_name == "r" and label == url
    with pytest.raises(StorageError, match="no such run directory"):
        storage.open_study(tmp_path / "nope")


def test_holds_study(tmp_path):
    assert storage.holds_study(tmp_path) is None
    (tmp_path / "run" / "weights").mkdir(parents=True)
    assert storage.holds_study(tmp_path / "run").endswith("weights")
    (tmp_path / "run" / "study.log").write_text("")
    assert storage.holds_study(tmp_path).endswith("run/study.log")


def test_every_trial_attribute_the_engine_writes_is_documented_in_the_storage_contract():
    """docs/reference/storage.md is the contract users and tools read: a key the engine writes but the
    contract does not name is a key nobody can rely on. The driver writes only keys
    `storage.TRIAL_ATTRS` names (its recorder refuses others; tests/nas/search/test_contract.py
    scans what the driver's code writes), so every named key must be documented."""
    root = Path(__file__).resolve().parents[2]
    keys = set(storage.TRIAL_ATTRS)
    assert len(keys) > 30
    doc = (root / "docs" / "reference" / "storage.md").read_text()
    assert sorted(k for k in keys if f"`{k}`" not in doc) == []
