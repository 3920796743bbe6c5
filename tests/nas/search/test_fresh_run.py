"""A run written now by tests/data/make_journal.py (the real engine, evaluator and latency
measurement, through the CLI) holds the same keys and values as the newest pinned run in
tests/data/runs/, key by key: the driver split into nas/search/ changed no stored byte that is not
a time, a host, a path, a seed or a measurement."""

import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from nas import storage

REPO = Path(__file__).resolve().parents[3]
RUNS = REPO / "tests" / "data" / "runs"

# study attributes that differ between two runs of one engine: when and for how long it ran, and
# how many over-budget draws the (timing-dependent) order of trials made
STUDY_VARIES = {"started_at", "wall_time_s", "skipped_over_budget"}
# study-file defaults changed since the newest pinned run was written: the pinned study file does
# not set them, so its stored settings hold the old default. (attribute, key) -> (old, new, commit)
DEFAULTS_CHANGED = {("latency", "recheck_near"): (0.05, 0.0, "929589b")}
# trial attributes fixed by the architecture and the study file alone
BY_ARCHITECTURE = ("config", "config_hash", "summary", "resolution", "evaluator", "flops",
                   "flops_paper", "params", "memory_mb", "infeasible", "latency_batch",
                   "latency_dtype", "latency_channels_last", "latency_repeats", "latency_resolution",
                   "latency_rounds", "latency_clock", "latency_protocol", "latency_source", "dataset")
# keys written only under a condition two runs need not share (tests/test_pinned_runs.py CONDITIONAL)
CONDITIONAL = {"flops_fvcore", "latency_first_spread_ms", "latency_first_uncertainty_pct", "error", "data_skipped_first",
               "latency_first_ms", "latency_recheck"}


def _newest_pinned() -> Path:
    runs = [p for p in RUNS.iterdir() if (p / "study.log").is_file()]
    return max(runs, key=lambda p: storage.open_study(p)[0].user_attrs["started_at"])


def _category(t) -> str:
    ua = t.user_attrs
    words = [t.state.name] + (["reused"] if ua.get("reused_from") is not None else [])
    if ua.get("infeasible"):
        words.append("over budget")
    elif t.state == TrialState.PRUNED:
        words.append("stopped early")
    return " ".join(words)


def _keys_by_category(study) -> dict[str, set]:
    out: dict[str, set] = {}
    for t in study.get_trials():
        keys = {f"user_attrs.{k}" for k in t.user_attrs if k not in CONDITIONAL}
        keys |= {f"system_attrs.{k}" for k in t.system_attrs}
        out.setdefault(_category(t), set()).update(keys)
    return out


@pytest.fixture(scope="module")
def fresh_and_pinned(tmp_path_factory):
    out = tmp_path_factory.mktemp("fresh") / "run"
    subprocess.run([sys.executable, str(REPO / "tests" / "data" / "make_journal.py"), "--out", str(out),
                    "--commit", "test"], cwd=REPO, check=True, capture_output=True, timeout=1800)
    return storage.open_study(out)[0], storage.open_study(_newest_pinned())[0]


@pytest.mark.slow
def test_the_study_attributes_are_the_pinned_runs(fresh_and_pinned):
    fresh, pinned = fresh_and_pinned
    assert fresh.directions == pinned.directions and fresh.metric_names == pinned.metric_names
    assert set(fresh.user_attrs) == set(pinned.user_attrs)
    now, then = dict(fresh.user_attrs), dict(pinned.user_attrs)
    for (attr, key), (old, new, _) in DEFAULTS_CHANGED.items():
        if (then[attr] or {}).get(key) == old and (now[attr] or {}).get(key) == new:
            now[attr], then[attr] = ({k: v for k, v in d.items() if k != key} for d in (now[attr], then[attr]))
    differ = {k for k in now if k not in STUDY_VARIES and now[k] != then[k]}
    assert differ == set(), {k: (now[k], then[k]) for k in differ}


@pytest.mark.slow
def test_each_kind_of_trial_holds_the_pinned_runs_keys(fresh_and_pinned):
    fresh, pinned = fresh_and_pinned
    f, p = _keys_by_category(fresh), _keys_by_category(pinned)
    common = set(f) & set(p)
    assert "COMPLETE" in common, (sorted(f), sorted(p))
    # draws over the exact params budget are rejected before they become trials (the proposer)
    assert not [c for c in f if "over budget" in c], sorted(f)
    for category in sorted(common):
        assert f[category] == p[category], (category, f[category] ^ p[category])


@pytest.mark.slow
def test_one_architecture_is_recorded_with_the_same_values(fresh_and_pinned):
    fresh, pinned = fresh_and_pinned

    def own(study):
        return {t.user_attrs["config_hash"]: t for t in study.get_trials()
                if "config_hash" in t.user_attrs and t.user_attrs.get("reused_from") is None}

    f, p = own(fresh), own(pinned)
    shared = sorted(set(f) & set(p))
    assert len(shared) >= 4, (sorted(f), sorted(p))
    for chash in shared:
        a, b = f[chash].user_attrs, p[chash].user_attrs
        for key in BY_ARCHITECTURE:
            assert a.get(key) == b.get(key), (chash, key, a.get(key), b.get(key))
        if a.get("infeasible"):        # the same budget broken, in the same words and values
            assert a["reason"] == b["reason"]
            assert f[chash].system_attrs["constraints"] == p[chash].system_attrs["constraints"]
        if f[chash].state == p[chash].state == TrialState.COMPLETE:
            assert (a["epochs"], a["fidelity"], len(a["history"])) == (b["epochs"], b["fidelity"], len(b["history"]))
            assert f[chash].values[1] == p[chash].values[1]                       # flops
