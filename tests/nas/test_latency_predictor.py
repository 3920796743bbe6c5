"""`latency: {model: auto | PATH}`: predictions that spare measuring configs far over budget."""

import pytest

import space
from nas.latency import model as latency_model
from nas.latency.predictor import MIN_AUTO, LatencyPredictor, LatencyPredictorError
from nas.latency.store import device_store, latency_key

DEVICE = "cpu: Test CPU x1 threads, torch 0, na2d_av pure PyTorch"
SETTINGS = {"device": DEVICE, "resolution": None, "batch": 1, "dtype": "fp32",
            "channels_last": False, "threads": 1, "protocol": 2}


def true_ms(config) -> float:
    """A device whose latency is a smooth function of the cost, not MACs alone."""
    cost = space.complexity(config)
    return 0.5 + cost.flops / 4e6 + cost.params / 2e5


@pytest.fixture(scope="module")
def configs():
    return list(space.load_space("studies/spaces/quickstart.yaml").enumerate())   # 72


def fill(store, configs):
    for c in configs:
        store.put(latency_key(c, DEVICE, 1, None, "fp32", False),
                  {"latency_ms": true_ms(c), "config": c.to_dict()})


def test_auto_fits_from_the_device_store_and_skips_only_configs_far_over_budget(configs):
    store = device_store(DEVICE)
    fill(store, configs[:MIN_AUTO - 1])
    store.put("an entry of another study without its config", {"latency_ms": 1.0})
    budget = sorted(true_ms(c) for c in configs)[len(configs) // 2]
    early = LatencyPredictor("auto", SETTINGS, store, budget, background=False)
    assert early.model is None and early.judge(configs[0]) is None    # too few: measure everything
    fill(store, configs[:40])
    p = LatencyPredictor("auto", SETTINGS, store, budget, background=False)
    assert len(p.latencies) == 40 and p.model is not None and p.model.margin < 0.2
    verdicts = [p.judge(c) for c in configs[40:]]
    skipped = [c for c, v in zip(configs[40:], verdicts) if v["skip"]]
    assert skipped, "a model within its margin must spare some far-over-budget measurements"
    for c, v in zip(configs[40:], verdicts):
        assert v["low_ms"] <= v["predicted_ms"] <= v["high_ms"]
        assert v["skip"] == (v["low_ms"] > budget)
        if v["skip"]:
            assert true_ms(c) > budget                 # never a feasible config skipped
    # every new measurement refits; auto saves the model beside the device's store
    fits = p.fits
    p.learn(configs[40], true_ms(configs[40]))
    assert p.fits == fits + 1 and len(p.model.latencies_ms) == 41
    assert latency_model.model_path(DEVICE, SETTINGS).exists()


def test_a_model_file_at_other_settings_is_refused_in_one_line(tmp_path, configs):
    model = latency_model.fit(configs[:20], [true_ms(c) for c in configs[:20]],
                              {**SETTINGS, "dtype": "fp16"})
    path = tmp_path / "m.json"
    model.save(path)
    with pytest.raises(LatencyPredictorError, match=r"^latency.model: .*m.json was fitted at other "
                                                    r"settings: dtype 'fp16' \(study: 'fp32'\); refit"):
        LatencyPredictor(str(path), SETTINGS, device_store(DEVICE), 3.0)
    with pytest.raises(LatencyPredictorError, match=r"^latency.model: .*no such latency model file"):
        LatencyPredictor(str(tmp_path / "none.json"), SETTINGS, device_store(DEVICE), 3.0)


def test_a_background_refit_takes_every_measurement(configs):
    p = LatencyPredictor("auto", SETTINGS, device_store(DEVICE), None)
    for c in configs[:30]:
        p.learn(c, true_ms(c))
    p.wait(60)
    assert p.model is not None and len(p.model.latencies_ms) == 30
    assert p.judge(configs[31])["skip"] is False        # no budget: predictions only
