"""What an export's config.json records beside the hub's own entries: where the trial comes
from (study, storage, selection, feasibility, objectives, budgets), the search's metrics and
evaluation, the weights record, the input contract, versions (`metadata`), and the exported
model's params and multiply-adds measured on the modules (`measure`)."""

from __future__ import annotations

import datetime as _dt

import torch

import overlock
from overlock import OverLoCKConfig
from nas import storage
from nas.export.out_dir import WRITTEN_BY
from nas.storage import feasibility, metric_value, study_objectives
from nas.storage import jsonable as _jsonable

__all__ = ["metadata", "measure"]


def measure(model: overlock.OverLoCK, deploy_model: overlock.OverLoCK) -> dict:
    """Params (counted on the modules) and multiply-adds (fvcore) of the exported model."""
    from overlock.flops import count_macs

    config = model.config
    params_deploy = sum(p.numel() for n, p in deploy_model.named_parameters() if not n.startswith("aux_head."))
    params_train = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, config.resolution, batch=1, in_chans=config.in_chans)
    out = {"params": params_deploy, "params_train": params_train,
           "flops": macs.total, "flops_paper": macs.paper,
           "input": [1, config.in_chans, *config.resolution],
           "how": "params: deploy structure without aux head, counted; flops: fvcore on the train "
                  "structure in eval mode (aggregation op counted; flops_paper leaves the large-kernel "
                  "depthwise convs and the aggregation op uncounted)"}
    try:
        from space import complexity

        cost = complexity(config)
        out["analytic"] = {"params": cost.params_inference, "flops": cost.flops,
                           "flops_paper": cost.flops_paper, "memory_mb": round(cost.memory_mb, 3)}
    except ImportError:
        pass
    return out


def metadata(study, trial, config: OverLoCKConfig, selection: str, storage_label: str | None,
              weights: dict) -> dict:
    from importlib import metadata as md

    attrs = trial.user_attrs
    objectives = study_objectives(study)
    feasible, why = feasibility(trial, storage.study_budgets(study), objectives)
    metrics = {n: metric_value(trial, n, objectives) for n in (*[o.name for o in objectives], *storage.METRICS)}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    latency = {k: attrs[k] for k in ("latency_ms", "latency_p90_ms", "latency_spread_ms", "latency_device",
                                     "latency_batch", "latency_dtype", "latency_channels_last",
                                     "latency_stages_ms") if k in attrs}
    study_evaluator = study.user_attrs.get("evaluator")
    versions = {"torch": torch.__version__}
    for package in ("overlock-nas", "optuna", "onnx", "onnxscript", "onnxruntime"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return {
        "written_by": WRITTEN_BY,
        "source": {
            "study": study.study_name,
            "storage": storage_label,
            "trial": trial.number,
            "state": trial.state.name,
            "selection": selection,
            "feasible": feasible,
            "infeasible_because": why or None,
            "objectives": [{"name": n, "direction": d} for n, d in objectives],
            "values": dict(zip([n for n, _ in objectives], trial.values or [])),
            "constraints": storage.named_constraints(trial, storage.study_budgets(study)),
            "budgets": study.user_attrs.get("constraints") or {},
            "resolution": attrs.get("resolution", list(config.resolution)),
        },
        "metrics": metrics,
        "latency": latency,
        "evaluator": {
            "name": attrs.get("evaluator"),
            "score": attrs.get("score"),
            "fidelity": attrs.get("fidelity"),
            "epochs": attrs.get("epochs"),
            "history": attrs.get("history"),
            "dataset": _jsonable(attrs.get("dataset")) if attrs.get("dataset") is not None else None,
            "settings": _jsonable(study_evaluator) if study_evaluator is not None else None,
        },
        "weights": _jsonable(weights),
        "input": {"layout": "NCHW float32", "shape": ["batch", config.in_chans, *config.resolution],
                  "normalisation": "as in training; nas.data serves (pixel/255 - 0.5) / 0.25"},
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
    }

