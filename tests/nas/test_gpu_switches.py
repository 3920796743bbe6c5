"""cudnn.benchmark: on for CUDA training and latency measurement, restored afterwards (checked
without a GPU: the switch, not the kernels; benchmarks/gpu_check.py runs them on a device)."""

import torch

from nas.latency import measure
from nas.evaluators.train import TrainEvaluator


def test_latency_measurement_autotunes_only_on_cuda_and_restores():
    torch.backends.cudnn.benchmark = False
    with measure._cudnn_autotune(True):
        assert torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.benchmark
    with measure._cudnn_autotune(False):
        assert not torch.backends.cudnn.benchmark


def test_training_autotunes_on_cuda_for_the_trial_only(monkeypatch):
    seen = {}

    def fake_evaluate(self, config, budget_epochs, device, *args):
        seen[device] = torch.backends.cudnn.benchmark
        if device == "cuda:0":
            raise RuntimeError("boom")      # the flag is restored on errors too
        return {}

    monkeypatch.setattr(TrainEvaluator, "_evaluate", fake_evaluate)
    torch.backends.cudnn.benchmark = False
    evaluator = TrainEvaluator({})
    evaluator.evaluate(None, budget_epochs=1, device="cuda", workdir="unused")
    evaluator.evaluate(None, budget_epochs=1, device="cpu", workdir="unused")
    try:
        evaluator.evaluate(None, budget_epochs=1, device="cuda:0", workdir="unused")
    except RuntimeError:
        pass
    assert seen == {"cuda": True, "cpu": False, "cuda:0": True}
    assert not torch.backends.cudnn.benchmark
