"""Score one architecture with a trained supernet: inherit its weights, re-estimate batch norm,
validate.

A sub-network's batch-norm running averages in the supernet were accumulated while every other
sub-network (other widths, depths, region counts) ran through the same norms, so they describe a
mixture, not this network: OFA and BigNAS re-estimate them per sub-network on a few training
batches before evaluating. `score_subnet` does that on the *extracted* model (an
`overlock.OverLoCK` equal to `create_model(config)` with inherited weights), with the train
evaluator's own re-estimation (a seeded random sample of the training split, preprocessed as
validation images are), and reports validation accuracy and mean cross-entropy; with
`bn_batches=0` it keeps the inherited running averages (the "without re-estimation" signal).
"""

from __future__ import annotations

import time

import torch

__all__ = ["score_subnet", "recipe_for"]


def recipe_for(settings: dict):
    """A `TrainEvaluator` used as the recipe: its validated settings, optimiser, loss, batch-norm
    re-estimation and validation are the ones every trained score of the project uses."""
    from nas.evaluators.train import TrainEvaluator

    return TrainEvaluator(settings)


@torch.no_grad()
def score_subnet(supernet, config, data, *, bn_batches: int, batch_size: int = 64,
                 eval_batch_size: int = 256, seed: int = 0, device: str = "cpu") -> dict:
    """{"accuracy", "val_loss", "wall_s"} of `config`'s sub-network of `supernet` on `data.val`.

    `config` must already have the data set's classes and channels (`fit_to_data`). BN statistics
    are re-estimated on `bn_batches` random training batches (0 = keep the inherited ones).
    Raises ValueError (one line) when the supernet does not contain `config`.
    """
    t0 = time.perf_counter()
    recipe = recipe_for({"batch_size": batch_size, "eval_batch_size": eval_batch_size,
                         "bn_recalibration_batches": bn_batches, "save_weights": False})
    model = supernet.extract(config).to(device)
    model.eval()
    device = torch.device(device)
    if bn_batches > 0:
        recipe._recalibrate_bn(model, data.train, device, None, torch.contiguous_format, seed=seed)
    accuracy, val_loss = recipe._validate(model, data.val, device, None, torch.contiguous_format)
    return {"accuracy": accuracy, "val_loss": val_loss, "wall_s": time.perf_counter() - t0}
