"""The model card (README.md) of an exported model directory, rendered from its config.json
data alone: architecture, measured figures (every compute figure labelled "GMACs (fvcore; the
paper's FLOPs)" with input size and batch; the data set an accuracy comes from), weights, files
and export checks, and how to load it."""

from __future__ import annotations

from typing import Any, Mapping

from overlock import OverLoCKConfig, hub
from nas.export.programs import CHECK_BATCHES, CHECK_SEED
from nas.storage import dataset_text, format_amount

__all__ = ["model_card", "accuracy_dataset"]


def _fmt_count(n: float | None, unit: str = "") -> str:
    if n is None:
        return "n/a"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {suffix}{unit}".rstrip()
    return f"{n:g} {unit}".rstrip()


def model_card(meta: dict) -> str:
    """The README.md of a model directory, from its config.json data."""
    cfg = OverLoCKConfig.from_dict(meta["config"])
    sections = (_card_header(meta), _card_architecture(cfg), _card_measured(meta, cfg),
                _card_weights(meta["weights"]), _card_files(meta, cfg), _card_usage(cfg))
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def _card_header(meta: dict) -> list[str]:
    src = meta["source"]
    feasible = (f"feasible under the study's budgets {_budgets(src['budgets'])}" if src["feasible"]
                else f"**infeasible** ({src['infeasible_because']})")
    return [f"# OverLoCK, trial {src['trial']} of study `{src['study']}`", "",
            f"`{meta['summary']}`", "",
            f"- config hash `{meta['config_hash']}` (architecture hash `{meta['architecture_hash']}`)",
            f"- selected: {src['selection'] or 'n/a'}",
            f"- state {src['state']}, {feasible}",
            f"- storage: `{src['storage']}`"]


def _card_architecture(cfg: OverLoCKConfig) -> list[str]:
    lines = ["## Architecture", "", "| net | stage | blocks | width | kernels | other |",
             "|---|---|---|---|---|---|"]
    depths = (*cfg.base_depths, cfg.overview_depth)
    for i, net in enumerate(("Base-Net",) * 3 + ("Overview-Net",)):
        lines.append(f"| {net} | {i + 1} | {depths[i]} | {cfg.widths[i]} | re-param {cfg.reparam_kernels[i]} "
                     f"| MLP x{cfg.mlp_ratios[i]:g} |")
    for i in range(2):
        lines.append(f"| Focus-Net | {i + 3} | {cfg.focus_depths[i]} | {cfg.widths[i + 2]} | dynamic "
                     f"{cfg.dynamic_kernels[i]} + small {cfg.small_kernel}, lepe {cfg.reparam_kernels[i + 2]} "
                     f"| {cfg.focus_heads[i]} head(s), MLP x{cfg.focus_mlp_ratios[i]:g} |")
    H, W = cfg.resolution
    lines += ["", f"Region count R = {cfg.region_count}; stem width {cfg.stem_width}; context dim "
              f"{cfg.context_dim}; head width {cfg.head_width}; {cfg.num_classes} classes; aux head "
              f"{'yes' if cfg.aux_head else 'no'}; input {cfg.in_chans}x{H}x{W}."]
    return lines


def _card_measured(meta: dict, cfg: OverLoCKConfig) -> list[str]:
    measured, weights = meta.get("measured", {}), meta["weights"]
    analytic = measured.get("analytic", {})
    shape = f"input 1x{cfg.in_chans}x{cfg.resolution[0]}x{cfg.resolution[1]}, batch 1"
    rows = [("params", _fmt_count(measured.get("params")),
             f"deploy structure without aux head, counted (train structure with aux head: "
             f"{_fmt_count(measured.get('params_train'))})")]
    if "flops" in measured:
        agree = ""
        if analytic:
            agree = ("; the search's analytic count agrees" if analytic.get("flops") == measured["flops"]
                     else f"; the search's analytic count: {analytic.get('flops') / 1e9:.4g}")
        rows.append(("compute", f"{measured['flops'] / 1e9:.4g}",
                     f"GMACs (fvcore; the paper's FLOPs), {shape}{agree}"))
        rows.append(("compute (paper)", f"{measured['flops_paper'] / 1e9:.4g}",
                     f"GMACs (paper convention: large-kernel depthwise convs and aggregation "
                     f"uncounted), {shape}"))
    if analytic.get("memory_mb") is not None:
        rows.append(("activation memory", f"{analytic['memory_mb']:.3g} MiB",
                     "analytic peak, fp32 inference, batch 1"))
    lat = meta.get("latency") or {}
    if "latency_ms" in lat:
        extra = "".join(f", {k[len('latency_'):]} {lat[k]}" for k in ("latency_p90_ms", "latency_spread_ms")
                        if k in lat)
        rows.append(("latency", f"{lat['latency_ms']:.3f} ms (median of round minima{extra})",
                     f"measured during the search on {lat.get('latency_device', 'an unrecorded device')}, "
                     f"batch {lat.get('latency_batch', '?')}, {lat.get('latency_dtype', '?')}, "
                     f"channels_last {lat.get('latency_channels_last', '?')}, deploy model"))
    elif "latency_export" not in meta:
        rows.append(("latency", "not measured",
                     "the study measured no latency for this trial (export with --latency to measure it)"))
    if "latency_export" in meta:
        le = meta["latency_export"]
        rows.append(("latency (export)", f"{le['latency_ms']:.3f} ms ({le.get('latency_protocol', 'median of round minima')}; "
                     f"as timed: p90 {le['latency_p90_ms']}, IQR {le['latency_spread_ms']})", f"measured at export on {le['latency_device']}, "
                     f"batch {le['latency_batch']}, {le['latency_dtype']}, {le['latency_repeats']} repeats, "
                     "deploy model"))
    if weights["source"] == "train":
        rows.append(("accuracy", f"{weights.get('score', float('nan')):.4f}",
                     f"top-1 on the validation split after the export-time training "
                     f"({_epochs(weights.get('epochs'))}), data set: "
                     f"{dataset_text((weights.get('settings') or {}).get('dataset')) or 'not recorded'}"))
    inherited = weights.get("supernet")
    if inherited:
        rows.append(("inherited-weight accuracy", f"{inherited['inherited_accuracy']:.4f}",
                     f"top-1 validation of the sub-network with the supernet's weights, batch norm "
                     f"re-estimated, not trained stand-alone; validation loss "
                     f"{inherited['inherited_val_loss']:.4f}; data set: "
                     f"{dataset_text(inherited.get('dataset')) or 'not recorded'}"
                     + ("; before the export-time training" if weights["source"] == "train" else "")))
    ev, metrics = meta.get("evaluator") or {}, meta.get("metrics", {})
    score = metrics.get("accuracy", ev.get("score"))
    if score is not None:
        data = f"; data set: {accuracy_dataset(meta)}"
        whose = {"trial": "these weights", "train": "the search's weights, not these",
                 "init": "the search's proxy training; these weights are untrained",
                 "supernet": "the search's score; these weights' own is the inherited-weight row"}[weights["source"]]
        rows.append(("accuracy" if weights["source"] == "trial" else "search accuracy", f"{score:.4f}",
                     f"top-1 validation, evaluator `{ev.get('name')}`, fidelity {ev.get('fidelity')} "
                     f"({_epochs(ev.get('epochs'))}){data}; {whose}"))
    for proxy in ("synflow", "naswot", "zico"):
        if proxy in metrics:
            rows.append((proxy, f"{metrics[proxy]:.6g}", "zero-cost proxy at initialisation"))
    return ["## Measured", "", "| what | value | how |", "|---|---|---|",
            *(f"| {what} | {value} | {how} |" for what, value, how in rows)]


def accuracy_dataset(meta: dict) -> str:
    """Which data set the search's accuracy comes from: the trial's own `dataset` record (the
    train evaluator writes it), else the study evaluator's `dataset` setting, else "not recorded"."""
    ev = meta.get("evaluator") or {}
    recorded = dataset_text(ev.get("dataset"))
    if recorded:
        return recorded
    settings = ev.get("settings") if isinstance(ev.get("settings"), dict) else {}
    configured = dataset_text(settings.get("dataset"))
    return f"{configured} (the study's evaluator setting)" if configured else "not recorded"


def _card_weights(weights: dict) -> list[str]:
    if weights["source"] == "trial":
        text = (f"Trained by the search's `{weights.get('evaluator')}` evaluator "
                f"({_epochs(weights.get('epochs'))}, fidelity {weights.get('fidelity')}); from "
                f"`{weights['file']}`.")
    elif weights["source"] == "train" and weights.get("supernet"):
        text = (f"Fine-tuned at export time from the weights inherited from the supernet "
                f"`{weights['supernet']['folder']}`: {_epochs(weights.get('epochs'))}, seed {weights['seed']}. "
                + _inherited_text(weights["supernet"]))
    elif weights["source"] == "train":
        text = f"Trained from scratch at export time: {_epochs(weights.get('epochs'))}, seed {weights['seed']}."
    elif weights["source"] == "supernet":
        text = (f"**Inherited from the supernet `{weights['supernet']['folder']}`, not trained "
                "stand-alone**: the trial's sub-network of it. " + _inherited_text(weights["supernet"])
                + " Fine-tune before use, or export with `--from-supernet --train`.")
    else:
        text = (f"**Freshly initialised (seed {weights['seed']}), not trained**: the trial's evaluator "
                "saved no weights. Fine-tune before use, or export with `--train`.")
    lines = ["## Weights", "", text]
    if weights.get("config_adapted"):
        changes = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in weights["config_adapted"].items())
        lines.append(f"The evaluator adapted {changes} to its data set; config.json holds the adapted config.")
    return lines


def _inherited_text(supernet: dict) -> str:
    bn = supernet.get("bn_recalibration") or {}
    return (f"The supernet was trained {_epochs(supernet.get('epochs'))} (seed {supernet.get('seed')}, "
            f"{supernet.get('rule')} rule) on {dataset_text(supernet.get('dataset')) or 'an unrecorded data set'}; "
            f"batch-norm statistics re-estimated on {bn.get('images')} of its training images "
            f"({bn.get('batches')} batches of {bn.get('batch_size')}, seed {bn.get('seed')}).")


def _card_files(meta: dict, cfg: OverLoCKConfig) -> list[str]:
    files = meta.get("files", {})
    lines = ["## Files and export checks", "", "| file | what |", "|---|---|",
             "| `config.json` | config, hash, provenance, metrics, file sha256s, checks |",
             "| `model.safetensors` | train-structure weights (fine-tunable, aux head included) |",
             "| `model_reparam.safetensors` | re-parameterised deploy weights |"]
    if hub.PROGRAM_FILE in files:
        lines.append("| `model.pt2` | `torch.export` program of the deploy model, dynamic batch; "
                     "`overlock::na2d_av` is one node (needs `import overlock`) |")
    if hub.ONNX_FILE in files:
        lines.append("| `model.onnx` | ONNX program of the deploy model, dynamic batch, aggregation op "
                     "decomposed into plain ONNX ops; input `images`, output `logits` |")
    for name, why in (meta.get("skipped") or {}).items():
        lines.append(f"| `{name}` | not written: {why} |")
    lines += ["", "| check | max abs diff | tolerance | result |", "|---|---|---|---|"]
    for c in meta.get("checks", []):
        if "error" in c:
            lines.append(f"| {c['check']} | - | {c['tolerance']:g} | not written: {c['error']} |")
        else:
            runtime = f" ({c['runtime']})" if c.get("runtime") else ""
            lines.append(f"| {c['check']}{runtime} | {c['max_abs_diff']:.3g} | {c['tolerance']:g} | "
                         f"{'pass' if c['passed'] else '**FAIL**'} |")
    H, W = cfg.resolution
    lines += ["", f"Inputs: random normal (seed {CHECK_SEED}), batches {list(CHECK_BATCHES)}, "
              f"{cfg.in_chans}x{H}x{W}, eval mode; eager = the train-structure model."]
    return lines


def _card_usage(cfg: OverLoCKConfig) -> list[str]:
    H, W = cfg.resolution
    return ["## Load it", "", "```python", "import pathlib, overlock, torch",
            'model = overlock.create_model(pathlib.Path("path/to/this/dir")).eval()   # deploy=True: re-parameterised',
            f"logits = model(torch.randn(1, {cfg.in_chans}, {H}, {W}))", "```", "",
            "Fine-tune on a new label set: `overlock.create_model(dir, num_classes=N)` (new classifier). "
            "The program: `overlock.hub.load_program(dir).module()(images)`; ONNX: "
            '`onnxruntime.InferenceSession("model.onnx")`. Inputs are normalised as in training '
            "(`nas.data`: `(pixel / 255 - 0.5) / 0.25`)."]


def _epochs(n) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _budgets(budgets: Mapping[str, Any]) -> str:
    if not budgets:
        return "(none)"
    return "(" + ", ".join(f"{k} <= {format_amount(float(v))}" for k, v in budgets.items()) + ")"
