"""Latency: the result's keys and statistics, per-stage breakdown, the cache and its key."""

import json
import platform
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from nas.latency.device import device_string
from nas.latency.measure import measure_latency
from nas.latency.store import LatencyCache, latency_key
from overlock import OverLoCK, OverLoCKConfig
from support.benchmarks import load_benchmark

REPO = Path(__file__).resolve().parents[2]
KEYS = {"latency_ms", "latency_p90_ms", "latency_spread_ms", "latency_min_ms", "latency_device",
        "latency_batch", "latency_dtype", "latency_channels_last", "latency_repeats",
        "latency_resolution", "latency_remeasured", "latency_sets", "latency_uncertainty_pct",
        "latency_round_minima_ms", "latency_protocol", "latency_protocol_version", "latency_raw_ms",
        "latency_yardstick_ms", "latency_yardstick_nominal_ms", "latency_speed"}


@pytest.fixture
def small(tiny_config) -> OverLoCKConfig:
    return tiny_config.replace(resolution=(32, 32))


def test_latency_result_keys_and_statistics(small):
    r = measure_latency(small, batch=2, warmup=1, repeats=5, threads=1)
    assert KEYS <= set(r) and "latency_stages_ms" not in r
    assert 0 < r["latency_min_ms"] <= r["latency_raw_ms"] <= r["latency_p90_ms"]   # as timed
    assert r["latency_ms"] == pytest.approx(r["latency_raw_ms"] * r["latency_speed"], rel=0.25)
    assert r["latency_spread_ms"] >= 0
    assert (r["latency_batch"], r["latency_dtype"], r["latency_channels_last"], r["latency_repeats"]) == \
        (2, "fp32", False, 5)
    assert r["latency_resolution"] == [32, 32]
    assert r["latency_device"].startswith("cpu: ") and "x1 threads" in r["latency_device"]
    assert f"torch {torch.__version__.split('+')[0]}" in r["latency_device"]
    assert r["latency_device"] == device_string("cpu", 1)
    json.dumps(r)   # storable as trial user_attrs


def test_threads_are_pinned_only_while_measuring(small):
    before = torch.get_num_threads()
    measure_latency(small, warmup=0, repeats=2, threads=1)
    assert torch.get_num_threads() == before


def test_stage_breakdown_names_every_stage(small):
    r = measure_latency(small, warmup=1, repeats=3, threads=1, profile_stages=True,
                        channels_last=True, resolution=(32, 48), dtype="bf16")
    model_stages = set(OverLoCK(small).stage_modules())
    stages = r["latency_stages_ms"]
    assert set(stages) == model_stages | {"other"}
    assert all(v >= 0 for v in stages.values()) and stages["focus3"] > 0
    assert r["latency_channels_last"] is True and r["latency_resolution"] == [32, 48]
    assert r["latency_dtype"] == "bf16"


def test_a_trained_model_is_measured_reparameterised_without_changing_it(small):
    model = OverLoCK(small)
    assert not model.deployed
    r = measure_latency(model, warmup=0, repeats=2, threads=1)
    assert r["latency_ms"] > 0 and not model.deployed and model.training


def test_bad_arguments():
    with pytest.raises(ValueError, match="dtype='int8'"):
        measure_latency(OverLoCKConfig(), dtype="int8")
    with pytest.raises(ValueError, match="repeats >= 2"):
        measure_latency(OverLoCKConfig(), repeats=1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            measure_latency(OverLoCKConfig(), device="cuda")


def test_latency_key_separates_every_field(small):
    dev = device_string("cpu", 2)
    base = latency_key(small, dev, 1, None, "fp32", False)
    variants = [latency_key(small.replace(region_count=2), dev, 1, None, "fp32", False),
                latency_key(small, device_string("cpu", 1), 1, None, "fp32", False),
                latency_key(small, dev, 2, None, "fp32", False),
                latency_key(small, dev, 1, (32, 64), "fp32", False),
                latency_key(small, dev, 1, None, "bf16", False),
                latency_key(small, dev, 1, None, "fp32", True),
                latency_key(small, dev, 1, None, "fp32", False, protocol=1)]
    assert len({base, *variants}) == 8
    # the resolution is the measured one: a config priced elsewhere but measured at 32 shares the key
    assert latency_key(small.replace(resolution=(64, 64)), dev, 1, 32, "fp32", False) == base
    assert latency_key(small.architecture_hash(), dev, 1, (32, 32), "fp32", False) == base


def test_readings_of_the_first_protocol_keep_their_key_and_are_not_taken_for_todays(tmp_path, small):
    """A reading an earlier study stored (protocol 1, before keys had a version) stays under its
    key, readable with the protocol it was taken by; a lookup at today's settings does not find
    it, and a latency model fitted on it keeps its file name (today's goes to another)."""
    from nas.latency import model as lm
    from nas.latency.store import measurement_settings, store_key

    dev = device_string("cpu", 1)
    old_key = f"{small.architecture_hash()}|{dev}|batch=1|res=32x32|dtype=fp32|channels_last=0"
    cache = LatencyCache(tmp_path / "latencies.json")
    cache.put(old_key, {"latency_ms": 3.0, "latency_protocol": "median of round minima, thread_cpu clock"})
    old = measurement_settings(dev, batch=1, dtype="fp32", channels_last=False, threads=1, protocol=1)
    today = measurement_settings(dev, batch=1, dtype="fp32", channels_last=False, threads=1)
    assert store_key(small, old) == old_key and cache.get(store_key(small, old))["latency_ms"] == 3.0
    assert cache.get(store_key(small, today)) is None
    legacy = {k: v for k, v in old.items() if k != "protocol"}    # a model file written before versions
    assert store_key(small, legacy) == old_key
    assert lm.model_path(dev, legacy) == lm.model_path(dev, old) != lm.model_path(dev, today)
    assert lm.model_path(dev, old).name == "latency_model_resconfig_b1_fp32_t1.json"


def test_a_reading_is_stored_under_one_key_that_fit_the_pricer_and_the_model_share(
        monkeypatch, tmp_path, small):
    """`latency fit`, a study's pricer and its latency model build the key and the settings with
    `measurement_settings` / `store_key`: what one stores the others find. The key's text is
    pinned, so readings stored by earlier versions stay found."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    import nas.latency.measure
    from nas.cli import main
    from nas.latency.predictor import LatencyPredictor
    from nas.latency.store import device_store, measurement_settings, store_key
    from nas.search.pricing import LatencyPricer
    from nas.study import LatencySettings

    dev = device_string("cpu", 1)
    settings = measurement_settings(dev, batch=1, dtype="fp32", channels_last=False, threads=1)
    assert settings == {"device": dev, "resolution": None, "batch": 1, "dtype": "fp32",
                        "channels_last": False, "threads": 1, "protocol": 2}
    assert store_key(small, settings) == (f"{small.architecture_hash()}|{dev}|batch=1|res=32x32"
                                          "|dtype=fp32|channels_last=0|protocol=2")

    def fake_group(items, **kwargs):
        return [{"latency_ms": 1.0 + i, "latency_device": dev, "config": c.to_dict()}
                for i, c in enumerate(items)]

    monkeypatch.setattr(nas.latency.measure, "_measure_group", fake_group)
    out = CliRunner().invoke(main, ["latency", "fit", "studies/spaces/quickstart.yaml", "--measurements",
                                    "3", "--resolution", "32", "--threads", "1", "--out", str(tmp_path / "m.json")])
    assert out.exit_code == 0, out.output
    stored = device_store(dev).entries()
    spec = SimpleNamespace(latency=LatencySettings(threads=1), constraints={}, label="study")
    pricer = LatencyPricer(spec, executor=None, run_dir=tmp_path / "run", target="", grace_s=0.0)
    pricer.device, pricer.threads, pricer.store = dev, 1, device_store(dev)
    pricer.record = LatencyCache(tmp_path / "run" / "latencies.json")
    for key, entry in stored.items():
        config = OverLoCKConfig.from_dict(entry["config"])
        assert key == store_key(config, settings) == pricer._key(config)
        assert pricer.lookup(config)["latency_ms"] == entry["latency_ms"]
    predictor = LatencyPredictor("auto", pricer._settings(), pricer.store, None, background=False)
    assert len(predictor.latencies) == len(stored) == 3
    assert pricer.lookup(small) is None


def test_device_auto_is_resolved_in_one_place(monkeypatch):
    """`device: auto` means CUDA when the measuring (or training) process sees it, else the CPU:
    `resolve_device` decides it for the worker, `profile` and `latency fit` alike."""
    from nas import worker
    from nas.latency.device import resolve_device

    for cuda in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        assert resolve_device("auto") == worker._resolve_device("auto") == ("cuda" if cuda else "cpu")
    assert [resolve_device(d) for d in ("cpu", "cuda", "cuda:1")] == ["cpu", "cuda", "cuda:1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert worker._resolve_device("cuda:3") == "cuda:1"       # Ray's numbering stays the worker's


def test_cache_round_trip_across_instances(tmp_path, small):
    path = tmp_path / "run" / "latency_cache.json"
    cache = LatencyCache(path)
    key = latency_key(small, "cpu: test", 1, None, "fp32", False)
    assert cache.get(key) is None
    result = {"latency_ms": 1.5, "latency_device": "cpu: test", "latency_stages_ms": {"stem": 0.1}}
    cache.put(key, result)
    again = LatencyCache(path)
    assert again.get(key) == result and key in again and len(again) == 1
    # the positional form builds the same key
    assert again.get(small, "cpu: test", 1, None, "fp32", False) == result
    again.put(small, "cpu: test", 2, None, "fp32", False, {"latency_ms": 2.5})
    assert cache.get(latency_key(small, "cpu: test", 2, None, "fp32", False)) == {"latency_ms": 2.5}
    cache.put_many({"a": {"latency_ms": 3.0}, "b": {"latency_ms": 4.0}})     # one write, merged
    assert len(LatencyCache(path)) == 4 and LatencyCache(path).get("b") == {"latency_ms": 4.0}
    assert not list(path.parent.glob("*.tmp*"))


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "latency_cache.json"

    def writer(i):
        for j in range(10):
            LatencyCache(path).put(f"k{i}-{j}", {"latency_ms": float(j)})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(LatencyCache(path)) == 40


def test_corrupt_cache_reads_as_empty_and_is_rewritten(tmp_path):
    path = tmp_path / "latency_cache.json"
    path.write_text("{not json")
    cache = LatencyCache(path)
    assert cache.get("k") is None
    cache.put("k", {"latency_ms": 1.0})
    assert json.loads(path.read_text()) == {"k": {"latency_ms": 1.0}}


_FAULTS = """
import resource, sys
import nas.latency.measure
from space import load_space
if sys.argv[1] == "not settled":
    nas.latency.measure.settle_large_blocks = lambda: False
timed, faults = nas.latency.measure._time_rounds, []
def forward_faults(model):
    def forward(x):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        out = model(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return out
    return forward
def counted(pairs, *args, **kwargs):
    return timed([(forward_faults(model), x) for model, x in pairs], *args, **kwargs)
nas.latency.measure._time_rounds = counted
space = load_space("studies/spaces/xt_t.yaml")
nas.latency.measure.measure_latencies([space.sample(seed=s) for s in (1, 2)], warmup=1, repeats=4,
                                      threads=1, resolution=64)
print(sum(faults[3:9]))   # the first group's timed forwards (2 configs, the yardstick), past one warm-up each
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
def test_a_process_times_its_first_configs_in_the_steady_state_of_later_ones():
    """Left adaptive, a young process's allocator maps and unmaps large activations, so the first
    group of configs a process measured read up to 1.6x their later figure, whatever the warm-up.
    measure_latency fixes the thresholds first: the first group's timed forwards take (almost)
    no page faults, against tens of thousands with the thresholds left adaptive."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                             check=True, cwd=REPO)
        return int(out.stdout.split()[-1])

    adaptive, settled = faults("not settled"), faults("settled")
    assert adaptive > 1000, adaptive          # the condition exists on this machine
    assert settled < 0.05 * adaptive, (settled, adaptive)


def test_the_latency_store_is_read_without_importing_torch():
    """The driver, the reports and the latency model read the store; only measuring needs torch
    (importing it costs seconds and hundreds of MiB in a process that never measures)."""
    code = ("import sys, nas.latency, nas.latency.store, nas.latency.model, nas.latency.predictor\n"
            "import nas.latency.device, nas.latency_store, nas.latency_model, nas.latency_predictor\n"
            "nas.latency.model.model_path('cpu: x1 threads', {'threads': 1})\n"
            "nas.latency.store.latency_key('abc', 'cpu: x1 threads', 1, 64)\n"
            "nas.latency.device.resolve_device('cpu')\n"
            "print(sorted(m for m in ('torch', 'nas.latency.measure') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split("\n")[0] == "[]", out.stdout


# what each old module offered (its __all__ and the private names tests and benchmarks used)
_OLD_PATHS = {
    "nas.measure": ("measure_latency", "measure_latencies", "device_string", "latency_key",
                    "LatencyCache", "DTYPES", "cache_root", "device_cache_dir",
                    "device_store", "CACHE_ENV", "STORE_FILE", "WARMUP", "REPEATS", "ROUNDS", "GROUP",
                    "PROTOCOL", "STAGE_REPEATS", "settle_large_blocks", "_stats",
                    "_time_rounds", "_measure_group", "_cudnn_autotune", "_cuda_driver"),
    "nas.latency_store": ("latency_key", "LatencyCache", "cache_root", "device_cache_dir",
                          "device_store", "CACHE_ENV", "STORE_FILE"),
    "nas.latency_model": ("LatencyModel", "fit", "load", "model_path", "features", "FEATURES",
                          "SETTINGS_KEYS", "cv_statistics", "LatencyModelError", "_flops_features",
                          "_solve"),
    "nas.latency_predictor": ("LatencyPredictor", "LatencyPredictorError", "MIN_AUTO"),
    "nas._malloc": ("release_large_blocks", "settle_large_blocks"),
}


_MISSING = object()


def test_the_old_module_paths_re_export_the_new_ones():
    """nas.measure, nas.latency_store, nas.latency_model, nas.latency_predictor and nas._malloc
    moved into nas.latency; their old paths give the very same objects for one release."""
    import importlib

    new = [importlib.import_module(f"nas.latency.{m}")
           for m in ("device", "measure", "store", "model", "predictor", "_malloc")]
    for old_path, names in _OLD_PATHS.items():
        old = importlib.import_module(old_path)
        for name in names:
            assert any(vars(m).get(name, _MISSING) is getattr(old, name) for m in new), (old_path, name)


def _protocol_defaults() -> dict:
    import inspect

    import nas.latency.measure

    return {k: p.default for k, p in inspect.signature(nas.latency.measure._measure_group).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _effective_protocol(kwargs: dict, defaults: dict) -> dict:
    """The protocol settings a `_measure_group` call ran with (its defaults filled in)."""
    return {k: kwargs.get(k, defaults[k]) for k in ("warmup", "repeats", "rounds", "pin", "threads")}


def test_profile_the_worker_latency_fit_and_the_benchmark_measure_with_one_protocol(
        monkeypatch, tmp_path, tiny_config):
    """A `profile` reading is comparable with a study's, `latency fit`'s and the benchmark's only
    when all four measure with the same settings. Before: profile timed 50 forwards, a study 30,
    the benchmark 20 after 3 warm-up forwards (a round's minimum of 10 forwards is not one of 6)."""
    from click.testing import CliRunner

    import nas.latency.measure
    from nas import worker
    from nas.cli import main
    from nas.study import LatencySettings

    calls, defaults = {}, _protocol_defaults()

    def fake_group(items, **kwargs):
        calls.setdefault(caller, []).append(_effective_protocol(kwargs, defaults))
        return [{"latency_ms": 10.0 + len(calls[caller]) + i, "latency_device": "cpu: fake"}
                for i, _ in enumerate(items)]

    monkeypatch.setattr(nas.latency.measure, "_measure_group", fake_group)
    monkeypatch.setenv("OVERLOCK_NAS_CACHE", str(tmp_path / "cache"))
    config_file = tmp_path / "c.yaml"
    config_file.write_text(tiny_config.replace(resolution=(32, 32)).to_yaml())

    caller = "profile"
    out = CliRunner().invoke(main, ["profile", "--config", str(config_file), "--threads", "1",
                                    "--device", "cpu", "--no-fvcore", "--json"])
    assert out.exit_code == 0, out.output
    caller = "worker"
    assert worker.run_latency(tiny_config.to_dict(), device="cpu", latency=LatencySettings().model_dump(),
                              num_threads=1)["ok"]
    caller = "latency fit"
    out = CliRunner().invoke(main, ["latency", "fit", "studies/spaces/quickstart.yaml", "--measurements", "3",
                                    "--resolution", "32", "--threads", "1", "--out", str(tmp_path / "m.json")])
    assert out.exit_code == 0, out.output
    bench = load_benchmark("bench_latency_model")
    args = bench.parser().parse_args([])
    calls["benchmark"] = [_effective_protocol({"warmup": args.warmup, "repeats": args.repeats,
                                               "threads": args.threads}, defaults)]

    protocols = {name: p for name, ps in calls.items() for p in ps}
    assert set(protocols) == {"profile", "worker", "latency fit", "benchmark"}
    assert len({tuple(sorted(p.items())) for p in protocols.values()}) == 1, protocols
    assert protocols["profile"]["repeats"] == nas.latency.measure.REPEATS == LatencySettings().repeats
    assert protocols["profile"]["warmup"] == nas.latency.measure.WARMUP == LatencySettings().warmup


def test_rounds_run_back_to_back(monkeypatch):
    """Protocol 2: nothing idles between rounds (protocol 1 slept up to 10 s after each round of a
    lone config, and the forwards after each pause read slower, by an amount that differed from
    process to process)."""
    import nas.latency.measure

    pauses, forwards = [], []
    monkeypatch.setattr(nas.latency.measure.time, "sleep", pauses.append)
    [(timed, walls)] = nas.latency.measure._time_rounds([(forwards.append, None)], repeats=6, warmup=2,
                                                        rounds=3, clock="wall")
    assert pauses == [] and len(forwards) == 2 + 6
    assert [len(r) for r in timed] == [2, 2, 2]


class _Machine:
    """A fake thread clock whose speed drifts: a forward of `cost` ms takes cost / speed."""

    def __init__(self):
        self.now, self.speed = 0.0, 1.0

    def clock(self):
        return self.now

    def model(self, cost_ms):
        def forward(x):
            self.now += cost_ms / 1e3 / self.speed
        return forward


def test_a_calibrated_reading_does_not_move_with_the_machines_speed(monkeypatch):
    """The yardstick takes its turn in every round; the reading is the config's round minimum
    relative to the yardstick's, times the yardstick's nominal ms on the device (the first one
    measured there, stored). A machine 25 % slower reads 25 % more as timed (`latency_raw_ms`)
    and the same calibrated `latency_ms`; without the yardstick it would have read 25 % more."""
    import nas.latency.measure as m
    from nas.latency.store import nominal_yardstick_ms

    machine = _Machine()
    monkeypatch.setattr(m.time, "thread_time", machine.clock)
    monkeypatch.setattr(m.time, "perf_counter", machine.clock)
    config, stick = (machine.model(40.0), None), (machine.model(20.0), None)

    def reading(speed):
        machine.speed = speed
        [timing] = m._timed_with_recheck([config], 6, 1, 3, "thread_cpu", None, [stick], [0])
        nominal = m._nominal("cpu: fake", "fp32", False, [timing])
        return m._result(timing, nominal)

    first, slower = reading(1.0), reading(0.8)
    assert first["latency_yardstick_nominal_ms"] == slower["latency_yardstick_nominal_ms"] == pytest.approx(20.0)
    assert nominal_yardstick_ms("cpu: fake", "fp32", False, 99.0, "later")["ms"] == pytest.approx(20.0)
    assert slower["latency_raw_ms"] == pytest.approx(1.25 * first["latency_raw_ms"])
    assert slower["latency_ms"] == pytest.approx(first["latency_ms"]) == pytest.approx(40.0)
    assert slower["latency_speed"] == pytest.approx(0.8) and first["latency_speed"] == pytest.approx(1.0)
    assert first["latency_uncertainty_pct"] == 0 and not first["latency_remeasured"]
    uncalibrated = m._result(m._timed_with_recheck([config], 6, 1, 3, "thread_cpu")[0], None)
    assert uncalibrated["latency_ms"] == pytest.approx(50.0) and "latency_raw_ms" not in uncalibrated


def test_a_reading_states_its_uncertainty_and_wide_ones_are_measured_again(monkeypatch):
    """Each reading's 95 % uncertainty comes from its rounds; while it is wider than the target,
    one more set of rounds (and its yardstick's) is pooled in, up to MAX_SETS sets, and the
    reading says so. Configs whose rounds agree are not measured again."""
    import nas.latency.measure as m
    from nas.latency.protocol import MAX_SETS, UNCERTAINTY_TARGET_PCT, uncertainty_pct

    assert uncertainty_pct([10.0] * 10) == 0
    assert uncertainty_pct([10.0] * 9 + [30.0]) == 0                       # one disturbed round
    assert uncertainty_pct([9.0, 9.5, 10.0, 10.5, 11.0] * 2) == pytest.approx(10.0)
    assert uncertainty_pct([10.0]) == float("inf")

    noisy, steady, stick = object(), object(), object()
    calls = []

    def fake_rounds(pairs, repeats, warmup, rounds, clock, progress=None, remeasure=False, configs=None):
        calls.append([p[0] for p in pairs])
        rounds_of = {noisy: [[9.0], [11.0]] * 5, steady: [[10.0]] * 10, stick: [[5.0]] * 10}
        return [(rounds_of[p[0]], [1.0]) for p in pairs]

    monkeypatch.setattr(m, "_time_rounds", fake_rounds)
    out = m._timed_with_recheck([(noisy, None), (steady, None)], 10, 1, 10, "thread_cpu", None,
                                [(stick, None)], [0, 0])
    assert calls == [[noisy, steady, stick]] + [[noisy, stick]] * (MAX_SETS - 1)
    assert [e["sets"] for e in out] == [MAX_SETS, 1]
    result = m._result(out[0], 5.0)
    assert result["latency_remeasured"] and result["latency_sets"] == MAX_SETS
    assert result["latency_uncertainty_pct"] > UNCERTAINTY_TARGET_PCT
    assert result["latency_first_uncertainty_pct"] == pytest.approx(10.0)
    assert not m._result(out[1], 5.0)["latency_remeasured"]


def test_progress_is_told_between_rounds_with_the_time_left(monkeypatch):
    """After the warm-up and after each round (its pause included), `progress` hears how far the
    set is and how long it has left: the rounds left at the forward time seen so far, with the
    pauses between them. A fake clock: each forward takes 10 ms, each pause what it asks."""
    import nas.latency.measure

    now = [0.0]
    monkeypatch.setattr(nas.latency.measure.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(nas.latency.measure.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))

    def model(x):
        now[0] += 0.01

    events = []
    nas.latency.measure._time_rounds([(model, None)], repeats=6, warmup=2, rounds=3, clock="wall",
                                     progress=events.append)
    assert [(e.done, e.rounds, e.configs, e.remeasure) for e in events] == [(d, 3, 1, False) for d in range(4)]
    assert events[0].left_s == pytest.approx(3 * 0.02)   # after the warm-up: 3 rounds of 2 forwards
    for e in events:
        assert e.elapsed_s + e.left_s == pytest.approx(now[0])          # exact for steady forwards
    assert events[-1].left_s == 0
