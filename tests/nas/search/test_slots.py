"""Slots: the configs waiting for their latency go to the measuring worker in sets, and each
reading comes back to its own trial (issue 26)."""

import math
from types import SimpleNamespace

import pytest

from nas.search.ledger import Live, Queues
from nas.search.pricing import MEASURE_SET, LatencyPricer
from nas.search.slots import Slots


class _Handle:
    def __init__(self, result):
        self.result = result


class _Executor:
    """Finishes every task at once; a set's result is one reading per config, in order."""

    def __init__(self):
        self.done = []

    def wait(self, handles, timeout):
        return [h for h in handles if h in self.done]

    def result(self, handle):
        return handle.result


class _Pricer:
    def __init__(self, executor):
        self.executor, self.sets = executor, []

    def submit(self, configs):
        self.sets.append(list(configs))
        handle = _Handle([{"ok": True, "latency_ms": float(c)} for c in configs])
        self.executor.done.append(handle)
        return handle

    readings, lost_set = LatencyPricer.readings, LatencyPricer.lost_set


def _slots(n):
    executor = _Executor()
    pricer = _Pricer(executor)
    queues = Queues()
    for i in range(n):
        queues.latency.append(Live(trial=SimpleNamespace(number=i), config=i, chash=str(i)))
    slots = Slots(SimpleNamespace(), executor, queues, rungs=None, weights=None, pricer=pricer)
    return slots, pricer, queues


@pytest.mark.parametrize("n", [1, 7, 8, 9, 19])
def test_a_queue_of_n_configs_is_measured_in_ceil_n_over_8_sets(n):
    slots, pricer, queues = _slots(n)
    back = []
    while queues.latency or queues.measuring:
        slots.pump()
        assert len(queues.measuring) <= 1              # one set at a time on the worker
        back += list(slots.collect(0, lambda: False))
    assert len(pricer.sets) == math.ceil(n / MEASURE_SET)
    assert [len(s) for s in pricer.sets][:-1] == [MEASURE_SET] * (len(pricer.sets) - 1)
    assert [c for s in pricer.sets for c in s] == list(range(n))     # in queue order
    assert sorted(lv.number for _, lv, _ in back) == list(range(n))
    for kind, lv, reading in back:                     # each trial its own reading
        assert kind == "latency" and reading["latency_ms"] == float(lv.config)


def test_a_set_that_returned_nothing_is_queued_again_one_config_at_a_time():
    slots, pricer, queues = _slots(3)
    slots.pump()
    [handle] = queues.measuring
    handle.result = {"ok": False, "reason": "worker died", "error": ""}   # the task was lost
    [(kind, lv, said)] = list(slots.collect(0, lambda: False))
    assert kind == "alone" and lv.number == 0
    assert said == ("latency: the set of 3 measured together (#0, #1, #2) was lost (worker died); "
                    "measuring each alone")
    assert [lv.number for lv in queues.latency] == [0, 1, 2] and all(lv.alone for lv in queues.latency)
    while queues.latency or queues.measuring:
        slots.pump()
        list(slots.collect(0, lambda: False))
    assert pricer.sets[1:] == [[0], [1], [2]]
