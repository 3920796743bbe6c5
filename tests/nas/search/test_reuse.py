"""Reuse across studies (issue 28): an architecture an earlier study trained the same way is reused,
never trained again and never counted as a training; one trained under another evaluator setting,
data set, fidelity or seed is never reused; the earlier results start the new study's model; a bad
`--reuse-from` is a one-line error."""

import json
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from nas import storage
from nas.cli import main
from nas.engine import SearchEngine, SearchError
from nas.search import reuse
from nas.study import parse_study
from nas_testing import study_dict, write_study


def _evaluated(log: Path) -> list[str]:
    """Config hashes the scripted evaluator trained, in order."""
    if not log.is_file():
        return []
    return [json.loads(line)["hash"] for line in log.read_text().splitlines() if line.strip()]


def _study(tmp_path: Path, name: str, **overrides):
    evaluator = {"sleep_s": 0, **overrides.pop("evaluator", {})}
    data = study_dict(tmp_path, name=name, output_dir=str(tmp_path / name), evaluator=evaluator, **overrides)
    return parse_study(data, label=name)


def _trials(run_dir: Path):
    return storage.open_study(run_dir)[0].get_trials()


@pytest.fixture(scope="module")
def study_a(tmp_path_factory, local_ray):
    """Study A, in a folder B's run directories sit beside: 8 sampled trials of the tiny space."""
    tmp = tmp_path_factory.mktemp("reuse")
    SearchEngine(_study(tmp, "a", trials=8)).run()
    done = {t.user_attrs["config_hash"]: t for t in _trials(tmp / "a")
            if t.state == TrialState.COMPLETE and t.user_attrs.get("reused_from") is None}
    assert len(done) >= 4
    return tmp, done


def test_a_hit_is_reused_from_its_study_and_trial_never_trained_or_counted(study_a):
    tmp, a = study_a
    before = len(_evaluated(tmp / "evals.jsonl"))
    b = _study(tmp, "b-hit", trials=3, trials_count="trained", sampler={"name": "frontier"})
    result = SearchEngine(b, reuse_from="neighbours").run()
    trials = _trials(tmp / "b-hit")
    reused = [t for t in trials if t.user_attrs.get("reused_from_study")]
    assert {t.user_attrs["config_hash"] for t in reused} == set(a)
    for t in reused:
        origin, source = t.user_attrs["reused_from_study"], a[t.user_attrs["config_hash"]]
        assert origin == {"study": "a", "storage": str(tmp / "a"), "trial": source.number}
        assert t.values[0] == source.values[0] and t.state == TrialState.COMPLETE
    trained_now = _evaluated(tmp / "evals.jsonl")[before:]
    assert not set(trained_now) & set(a)                 # none of A's trained again
    assert len(trained_now) == 3 == result.progress.counted   # the budget counts new trainings only
    assert result.progress.reused >= len(a)


@pytest.mark.parametrize("change", [
    {"evaluator": {"lr": 0.01}},                                       # an evaluator setting
    {"evaluator": {"dataset": {"kind": "procedural", "seed": 1}}},     # the data set
    {"evaluator": {"epochs": 3}},                                      # the fidelity
    {"seed": 7},                                                       # the seed policy
], ids=["evaluator-setting", "dataset", "fidelity", "seed-policy"])
def test_nothing_is_reused_when_a_fact_of_the_measurement_changed(study_a, change):
    tmp, a = study_a
    name = "b-" + "-".join(f"{k}{list(v) if isinstance(v, dict) else v}" for k, v in change.items())
    name = "".join(c for c in name if c.isalnum() or c in "-_")
    lines = []
    b = _study(tmp, name, trials=4, **change)
    SearchEngine(b, reuse_from=[str(tmp / "a")], on_progress=lambda p, line: lines.append(line)).run()
    assert not [t for t in _trials(tmp / name) if t.user_attrs.get("reused_from_study")]
    said = next(line for line in lines if line and line.startswith("reuse:"))
    assert "0 results" in said and "skipped 1 measured otherwise" in said


def test_a_setting_that_changes_no_score_keeps_the_results(study_a):
    tmp, a = study_a
    b = _study(tmp, "b-threads", trials=1, evaluator={"threads": 1})
    SearchEngine(b, reuse_from=[str(tmp / "a")]).run()
    reused = {t.user_attrs["config_hash"] for t in _trials(tmp / "b-threads") if t.user_attrs.get("reused_from_study")}
    assert reused == set(a)


def test_only_full_fidelity_trained_results_are_in_the_store():
    dist = {"x": CategoricalDistribution([1, 2])}

    def trial(**ua):
        return optuna.trial.create_trial(state=TrialState.COMPLETE, values=[0.5, 1.0], params={"x": 1},
                                         distributions=dist, user_attrs={"config_hash": "h", **ua})

    assert reuse._result(trial(fidelity=1.0), 0, "a", "runs/a") is not None
    assert reuse._result(trial(fidelity=1 / 3), 0, "a", "runs/a") is None       # stopped at a rung
    assert reuse._result(trial(reused_from=3), 0, "a", "runs/a") is None        # a repeat
    chained = reuse._result(trial(reused_from_study={"study": "z", "storage": "s", "trial": 9}), 0, "a", "x")
    assert chained.origin == {"study": "z", "storage": "s", "trial": 9}         # the one that trained it


@pytest.mark.parametrize("sampler", ["frontier", "tpe"])
def test_warm_start_puts_the_earlier_results_in_the_model(study_a, sampler, monkeypatch):
    from nas.search.frontier import FrontierProposer
    from nas.search.proposals import ShadowProposer

    tmp, a = study_a
    uniform, known_at_first = [], []
    original_uniform, originals = FrontierProposer._uniform, {}

    def known(proposer) -> int:
        if isinstance(proposer, FrontierProposer):
            return sum(t.state == TrialState.COMPLETE for t in proposer._trials.values())
        return len(proposer.shadow.get_trials(states=(TrialState.COMPLETE,)))

    for cls in (FrontierProposer, ShadowProposer):
        originals[cls] = cls.propose

        def propose(self, study, _cls=cls):
            if not known_at_first:
                known_at_first.append(known(self))
            return originals[_cls](self, study)
        monkeypatch.setattr(cls, "propose", propose)
    monkeypatch.setattr(FrontierProposer, "_uniform",
                        lambda self, seen, rejected: uniform.append(len(seen)) or original_uniform(self, seen, rejected))
    options = {"name": sampler, **({"n_startup": len(a)} if sampler == "frontier" else {})}
    b = _study(tmp, f"b-warm-{sampler}", trials=1, trials_count="trained", sampler=options)
    engine = SearchEngine(b, reuse_from=[str(tmp / "a")])
    engine.run()
    first = sorted(_trials(tmp / f"b-warm-{sampler}"), key=lambda t: t.number)[:len(a)]
    assert {t.user_attrs["config_hash"] for t in first} == set(a)     # A's results are B's first trials
    assert known_at_first == [len(a)]        # ... known to the sampler before its first proposal
    if sampler == "frontier":
        assert not uniform                   # they stood for the start-up draws
        assert max(gp.n for gp, _ in engine.proposals.proposer._hyper.values()) >= len(a)   # GP rows


def test_a_resumed_study_does_not_import_twice(study_a):
    tmp, a = study_a
    b = _study(tmp, "b-resume", trials=2, trials_count="trained")
    SearchEngine(b, reuse_from=[str(tmp / "a")]).run()
    SearchEngine(_study(tmp, "b-resume", trials=3, trials_count="trained"), reuse_from=[str(tmp / "a")]).run()
    hashes = [t.user_attrs["config_hash"] for t in _trials(tmp / "b-resume")     # (not repeats in B)
              if t.user_attrs.get("reused_from_study") and t.user_attrs.get("reused_from") is None]
    assert sorted(hashes) == sorted(set(hashes)) and set(hashes) == set(a)


def test_without_reuse_the_engine_reads_no_earlier_study(study_a):
    tmp, a = study_a
    SearchEngine(_study(tmp, "b-none", trials=2)).run()
    assert not [t for t in _trials(tmp / "b-none") if t.user_attrs.get("reused_from_study")]


def test_the_report_marks_reused_trials_and_counts_new_trainings(study_a):
    from reports.data import load_study_data
    from reports.figures import hypervolume_figure

    tmp, a = study_a
    run = tmp / "b-hit"
    if not (run / "study.log").is_file():
        SearchEngine(_study(tmp, "b-hit", trials=3, trials_count="trained"), reuse_from="neighbours").run()
    sd = load_study_data(run)
    df = sd.trials
    assert set(df.loc[df["reused_from_study"].notna(), "origin"]) == {f"study a #{t.number}" for t in a.values()}
    figure = hypervolume_figure(sd)
    layout = figure.figure.to_dict()["layout"]
    assert "new trainings" in {(layout[k].get("title") or {}).get("text") for k in layout if k.startswith("xaxis")}
    x = figure.figure.data[0].x
    assert x[0] == 0 and x[-1] == 3      # the earlier results at 0, then each of the 3 trainings


@pytest.mark.parametrize("make, words", [
    (lambda tmp: tmp / "missing", "no such file or directory"),
    (lambda tmp: (tmp / "notes.txt").write_text("hello\n") and tmp / "notes.txt", "not an Optuna journal"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "not a run directory"),
], ids=["missing", "not-a-journal", "not-a-run-dir"])
def test_a_bad_reuse_from_is_a_one_line_error(tmp_path, make, words):
    source = make(tmp_path)
    study = write_study(tmp_path)
    res = CliRunner().invoke(main, ["search", str(study), "--reuse-from", str(source)])
    assert res.exit_code == 1, res.output
    assert words in res.output and f"--reuse-from {source}" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "study.log").exists()     # refused before anything was written
    with pytest.raises(SearchError, match=words):
        SearchEngine(parse_study(study_dict(tmp_path), label="s"), reuse_from=[str(source)])


def test_a_study_in_an_rdb_reuses_the_other_studies_of_that_rdb(tmp_path, local_ray):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    SearchEngine(_study(tmp_path, "a-rdb", trials=4, storage=url)).run()
    a = {t.user_attrs["config_hash"] for t in optuna.load_study(study_name="a-rdb", storage=url).get_trials()
         if t.state == TrialState.COMPLETE}
    SearchEngine(_study(tmp_path, "b-rdb", trials=1, storage=url), reuse_from="neighbours").run()
    b = optuna.load_study(study_name="b-rdb", storage=url).get_trials()
    assert {t.user_attrs["config_hash"] for t in b if t.user_attrs.get("reused_from_study")} == a
    assert {t.user_attrs["reused_from_study"]["study"] for t in b if t.user_attrs.get("reused_from_study")} \
        == {"a-rdb"}


def test_the_cli_reuses_the_run_directories_beside_by_default_and_not_with_no_reuse(tmp_path):
    runs = tmp_path / "runs"
    for name, extra in (("a", []), ("b", []), ("c", ["--no-reuse"])):
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(study_dict(tmp_path, name=name, trials=3, evaluator={"sleep_s": 0},
                                              output_dir=str(runs / name))))
        res = CliRunner().invoke(main, ["search", str(path), *extra])
        assert res.exit_code == 0, res.output
        if name == "b":
            assert "(study a #" in res.output          # the front table says where a result came from
            assert "reuse: " in res.output and "results from 1 earlier study" in res.output
    reused = {n: [t for t in _trials(runs / n) if t.user_attrs.get("reused_from_study")] for n in "bc"}
    assert reused["b"] and not reused["c"]
