"""The trial budget is counted per trial as the driver changes it, never by rescanning storage."""

import random

import optuna
from optuna.trial import TrialState, create_trial

from nas.search.ledger import Dedup, Live, Queues, TrialBudget, counts

STATES = [TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.WAITING]


def _trial(number, state, **ua):
    t = create_trial(state=state, values=[1.0] if state == TrialState.COMPLETE else None, user_attrs=ua)
    t.number = number
    return t


def _random_trial(rng, number):
    ua = {}
    for key, value in (("superseded", True), ("infeasible", True), ("reused_from", 0),
                       ("rung_scores", {"1": 0.5}), ("config_hash", "h")):
        if rng.random() < 0.3:
            ua[key] = value
    return _trial(number, rng.choice(STATES), **ua)


def test_the_incremental_count_equals_a_full_count_after_any_changes():
    rng = random.Random(0)
    for mode in ("trained", "sampled"):
        budget = TrialBudget(10, mode, None)
        stored = {n: _random_trial(rng, n) for n in range(20)}
        budget.resync(stored.values())
        for _ in range(300):          # the driver asks, changes and tells trials one at a time
            n = rng.randrange(30)
            if rng.random() < 0.2:
                budget.asked(n)
                stored[n] = _trial(n, TrialState.RUNNING)
            else:
                stored[n] = _random_trial(rng, n)
                budget.update(stored[n])
            full = [t for t in stored.values()]
            assert budget.counted == sum(counts(t, mode) for t in full)
            assert budget.finished == sum(counts(t, mode) and t.state.is_finished() for t in full)
            assert budget.waiting == {t.number for t in full if t.state == TrialState.WAITING}


def test_budget_left_and_the_stop_when_nothing_new_is_left():
    budget = TrialBudget(2, "trained", space_size=3)
    budget.resync([_trial(0, TrialState.COMPLETE, config_hash="a")])
    assert budget.left()
    budget.asked(1)
    assert not budget.left()                                   # 2 of 2 counted
    budget.update(_trial(1, TrialState.PRUNED, infeasible=True))
    assert budget.left() and budget.draw(False, seen=2) is None
    assert budget.draw(False, seen=3) == ("all 3 architectures of the space were drawn: no new "
                                          "architecture within budget is left to train")
    assert not budget.left() and budget.draw(False, seen=3) is None   # said once
    budget.update(_trial(5, TrialState.WAITING))
    assert budget.left()                                       # queued trials run first


def test_a_duplicate_waits_for_its_original_and_is_released_when_it_finishes():
    study = optuna.create_study()
    queues, dedup = Queues(), Dedup()
    first, dup = Live(trial=study.ask(), chash="h"), Live(trial=study.ask(), chash="h")
    dedup.live["h"] = first
    queues.parked["h"] = [dup]
    assert queues.busy() and queues.occupancy() == 0
    dedup.finished(first, TrialState.COMPLETE, queues)
    assert list(queues.released) == [dup] and not queues.parked and dedup.index == {"h": first.number}
    assert [lv.number for lv in queues.drain()] == [dup.number] and not queues.busy()


def test_the_driver_never_rescans_the_study_per_trial(tmp_path, local_ray, monkeypatch):
    """30 trials without an evaluator: the old driver read every trial of the study at every ask
    and every turn of its loop (hundreds of full reads); now a fixed few, however many trials."""
    from nas.engine import SearchEngine
    from nas.study import parse_study
    from nas_testing import study_dict

    reads = []
    get_trials = optuna.Study.get_trials

    def counted(self, *args, **kwargs):
        reads.append(1)
        return get_trials(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "get_trials", counted)
    spec = parse_study(study_dict(tmp_path, objectives=["flops", "params"], evaluator=None, trials=30,
                                  constraints={"flops": 2.0e6}), label="t")
    result = SearchEngine(spec).run()
    assert result.progress.done == 30
    assert len(reads) <= 5, len(reads)
