"""Every attribute key is named once (`nas.storage.STUDY_ATTRS` / `TRIAL_ATTRS`), documented in
docs/reference/storage.md, and the only keys the driver writes; the pinned runs hold nothing else."""

import re
from pathlib import Path

import optuna
import pytest

from nas import storage
from nas.search import recorder
from nas.search.recorder import Recorder, UnnamedKey

REPO = Path(__file__).resolve().parents[3]
# the driver and its parts (nas/search/ also holds the proposers of issue 17, which write nothing
# to a trial themselves; tests/nas/test_optuna_private.py scans every product module)
DRIVER = [REPO / "nas" / "engine.py"] + [REPO / "nas" / "search" / f"{name}.py" for name in (
    "session", "ledger", "pricing", "slots", "evaluation", "halving", "recorder", "weights")]


def written_trial_keys() -> set[str]:
    """Every trial attribute key the driver's code writes: `recorder.set(trial, "key", ...)`,
    the dicts it passes to `recorder.update`, the result keys it copies, the latency model's
    view, a rechecked latency reading (the latency pricer's `LatencyStep.attrs`) and the
    analytic cost metrics."""
    from nas.search.pricing import _first_attrs, price, verdict_attrs
    from nas_testing import TINY_SPACE

    import space

    keys: set[str] = set()
    for path in DRIVER:
        text = path.read_text()
        keys |= set(re.findall(r'\.set\(\s*[\w.]+,\s*"([a-z0-9_]+)"', text))
        for block in re.findall(r"\.update\([\w.]+, \{(.*?)\}\)", text, re.S):
            keys |= set(re.findall(r'"([a-z0-9_]+)":', block))
    keys |= set(recorder.EVAL_RESULT_KEYS) | {f"trained_{k}" for k in ("num_classes", "resolution")}
    keys |= set(verdict_attrs({"predicted_ms": 1.0, "low_ms": 0.9, "margin": 0.1, "n": 3}))
    keys |= set(_first_attrs({"latency_ms": 1.0}, "near the budget"))   # a reading measured again
    keys |= {"latency_source"}          # a LatencyStep's attrs when the model spares measuring
    keys |= set(price(next(space.load_space(TINY_SPACE).enumerate()), check=False).metrics)
    keys |= {"requeued_from"}          # written through enqueue_trial(user_attrs=...)
    return keys


def test_every_named_key_is_documented():
    doc = (REPO / "docs" / "reference" / "storage.md").read_text()
    names = list(storage.STUDY_ATTRS) + list(storage.TRIAL_ATTRS)
    assert sorted(k for k in names if f"`{k}`" not in doc) == []


def test_every_trial_key_the_driver_writes_is_named():
    keys = written_trial_keys()
    assert len(keys) > 40 and {"config_hash", "rung_val_loss", "latency_source", "gate_score",
                               "continued_from", "estimated", "eval_wall_s"} <= keys
    assert sorted(keys - set(storage.TRIAL_ATTRS)) == []


def test_only_the_recorder_writes_a_trial():
    """`set_user_attr` and constraint writes appear in the recorder (trials) and the session
    (the study's own attributes) only."""
    writers = {p.name for p in DRIVER if re.search(r"set_user_attr\(|write_constraints\(|\.tell\(",
                                                    p.read_text())}
    assert writers == {"recorder.py", "session.py"}
    assert not re.search(r"\.tell\(|write_constraints\(", (REPO / "nas" / "search" / "session.py").read_text())


def test_every_study_key_the_driver_writes_is_named():
    text = (REPO / "nas" / "search" / "session.py").read_text()
    keys = set(re.findall(r'set_user_attr\(\s*"([a-z0-9_]+)"', text))
    block = re.search(r"values = \{(.*?)\n    \}", text, re.S).group(1)
    keys |= set(re.findall(r'^\s*"([a-z0-9_]+)":', block, re.M))
    assert len(keys) >= 15 and sorted(keys - set(storage.STUDY_ATTRS)) == []


@pytest.mark.parametrize("run", sorted(p.name for p in (REPO / "tests" / "data" / "runs").iterdir()))
def test_the_pinned_runs_hold_only_named_keys(run):
    study, _ = storage.open_study(REPO / "tests" / "data" / "runs" / run)
    trial_keys = {k for t in study.get_trials() for k in t.user_attrs}
    assert sorted(trial_keys - set(storage.TRIAL_ATTRS)) == []
    assert sorted(set(study.user_attrs) - set(storage.STUDY_ATTRS)) == []


def test_the_recorder_refuses_a_key_nobody_named():
    study = optuna.create_study()
    rec = Recorder(study, ["x"], {}, [])
    trial = study.ask()
    rec.set(trial, "reason", "a named key")
    rec.set(trial, "latency_new_field_ms", 1.0)      # a measurement's own keys pass as they come
    with pytest.raises(UnnamedKey, match="'surprise' is not named in nas.storage.TRIAL_ATTRS"):
        rec.set(trial, "surprise", 1)
    rec.copy(trial, {"key_of_an_older_engine": 1})   # copies of stored records are kept as stored
    assert set(trial.user_attrs) == {"reason", "latency_new_field_ms", "key_of_an_older_engine"}


def test_one_list_of_the_metrics_priced_before_training():
    """`space.budgets` (below `nas`: `space` cannot import the contract) names the metrics the
    analytic cost model gives; every other name for them is that very tuple."""
    import space
    from nas import study
    from nas.search import contract, proposals

    exact = space.budgets.EXACT_METRICS
    for other in (space.feasibility.PRICED_METRICS, storage.COST_METRICS, study.EXACT_METRICS,
                  contract.EXACT_METRICS, proposals.EXACT_METRICS):
        assert other is exact
    assert exact == tuple(n for n, m in storage.METRICS.items() if m.kind == "cost")
    assert set(contract.REASONS) == set(exact)
    assert set(storage.CONSTRAINT_METRICS) == set(storage.COST_METRICS) | set(storage.MEASURED_METRICS)


def test_no_import_cycle_among_the_search_modules():
    """nas.search's modules import each other one way, imports inside functions included (the
    proposers import `contract`, the factory in `proposals` imports the proposers)."""
    import ast

    folder = REPO / "nas" / "search"
    names = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    graph = {}
    for name in names:
        found = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level == 1 or module.startswith("nas.search"):
                    found.add(module.rsplit(".", 1)[-1] if module else "")
                    found |= {a.name for a in node.names} if not module or module == "nas.search" else set()
            elif isinstance(node, ast.Import):
                found |= {a.name.rsplit(".", 1)[-1] for a in node.names if a.name.startswith("nas.search.")}
        graph[name] = found & names - {name}
    assert "contract" in graph["frontier"] and "proposals" not in graph["frontier"]

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, seen + (n,))) for n in graph[start])

    assert [n for n in sorted(names) if reaches(n, n)] == []
