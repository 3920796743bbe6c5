"""`overlock-nas profile`: what one architecture costs, counted three ways and measured.

    overlock-nas profile --preset overlock_t
    overlock-nas profile --config trial.yaml --resolution 160x256 --batch 8 --dtype bf16 --json

Prints params (deploy model, no aux head), multiply-adds from the analytic cost model and from an
fvcore trace, both in fvcore's convention (the paper's FLOPs) and the paper's own convention,
peak inference activation memory (analytic), and the deploy model's latency measured on this
machine's device (CUDA when present, else CPU) with the device string. Every compute figure is
labelled "GMACs (fvcore; the paper's FLOPs)" with its input size and batch.
"""

from __future__ import annotations

import json
import os

import click

DTYPES = ("fp32", "fp16", "bf16")


def parse_resolution(text: str | None):
    """"224" -> (224, 224); "160x256" -> (160, 256) (height x width); None -> None."""
    if text is None:
        return None
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{text!r}: use 224 or HEIGHTxWIDTH like 160x256",
                                 param_hint="--resolution") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 32:
        raise click.BadParameter(f"{text!r}: one or two sizes, each >= 32", param_hint="--resolution")
    return tuple(values)


def load_config_file(path: str):
    """An OverLoCKConfig from a YAML / JSON file holding a config mapping, or {config: mapping}
    (a trial record or an exported model's config.json)."""
    import yaml

    from overlock import OverLoCKConfig

    with open(path) as fh:
        text = fh.read()
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
                         f"{str(e).splitlines()[0]}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of OverLoCK config fields")
    return OverLoCKConfig.from_dict(data)


def profile_config(config, *, batch: int = 1, dtype: str = "fp32", device: str = "auto",
                   threads: int | None = None, repeats: int | None = None, warmup: int | None = None,
                   channels_last: bool = False, stages: bool = False, latency: bool = True,
                   fvcore: bool = True, progress: bool = False) -> dict:
    """The profile of `config` at its resolution as a JSON-able dict (see the module docstring).
    `repeats` / `warmup` None: the measuring protocol's defaults (`nas.latency.measure`), the same a
    study and `latency fit` use, so a reading here is comparable with theirs. `progress`: say on
    stderr how the latency measurement goes and about how long it has left."""
    import time

    import torch

    import space
    from nas.commands._progress import duration
    from overlock import OverLoCK
    from overlock.flops import count_macs

    res = tuple(config.resolution)
    cost = space.complexity(config, resolution=res, batch=batch)
    doc = {
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "summary": config.summary(),
        "input": {"batch": batch, "channels": config.in_chans, "resolution": list(res)},
        "compute_label": space.macs_label(res, batch),
        "params": cost.params_inference,
        "params_train": cost.params,
        "flops": {"analytic": cost.flops, "fvcore": None},
        "flops_paper": {"analytic": cost.flops_paper, "fvcore": None},
        "memory_mb": round(cost.memory_mb, 3),
        "latency": None,
    }
    if fvcore:
        started = time.monotonic()
        if progress:
            click.echo("fvcore: tracing the model to count its multiply-adds (--no-fvcore skips it)", err=True)
        torch.manual_seed(0)
        model = OverLoCK(config)
        counted = count_macs(model, res, batch=batch, in_chans=config.in_chans)
        if progress:
            click.echo(f"fvcore: traced in {duration(time.monotonic() - started)}", err=True)
        doc["flops"]["fvcore"] = counted.total
        doc["flops_paper"]["fvcore"] = counted.paper
        doc["params_train_counted"] = sum(p.numel() for p in model.parameters())
        doc["fvcore_uncounted_ops"] = {k: int(v) for k, v in counted.uncounted_ops.items()}
        doc["analytic_matches_fvcore"] = (counted.total == cost.flops and counted.paper == cost.flops_paper)
        del model
    if latency:
        from nas.latency.device import resolve_device

        protocol = {k: v for k, v in (("warmup", warmup), ("repeats", repeats)) if v is not None}
        doc["latency"] = _measure(config, resolve_device(device), progress, batch=batch, dtype=dtype,
                                  channels_last=channels_last, threads=threads, profile_stages=stages,
                                  **protocol)
    return doc


def _measure(config, device: str, progress: bool, **settings) -> dict:
    """`measure_latency` of `config` on `device`; with `progress`, what it involves and then
    where it stands and about how long it has left, on stderr."""
    from nas.commands._progress import MeasuringProgress, protocol_line
    from nas.latency.measure import GROUP, REPEATS, ROUNDS, WARMUP, measure_latency
    from nas.latency.protocol import UNCERTAINTY_TARGET_PCT

    tell = None
    if progress:
        line = protocol_line(1, settings.get("warmup", WARMUP), settings.get("repeats", REPEATS), ROUNDS,
                             GROUP)
        click.echo(f"latency: {line}", err=True)
        tell = MeasuringProgress(1, "latency")
    reading = measure_latency(config, device=device, progress=tell, **settings)
    if reading.get("latency_uncertainty_pct", 0.0) > UNCERTAINTY_TARGET_PCT:
        click.echo(f"warning: latency {reading['latency_ms']:.3f} ms +-{reading['latency_uncertainty_pct']:.1f} % "
                   f"after {reading['latency_sets']} sets of rounds, wider than +-{UNCERTAINTY_TARGET_PCT:g} %: "
                   "something else was using this machine; measure again when it is quiet", err=True)
    return reading


def _g(value) -> str:
    return "-" if value is None else f"{value / 1e9:.4f}"


def render(doc: dict, name: str) -> str:
    """Human-readable profile; every compute figure labelled with input size and batch."""
    b, (h, w) = doc["input"]["batch"], doc["input"]["resolution"]
    c = doc["input"]["channels"]
    size = f"input {b}x{c}x{h}x{w} (batch {b})"
    lines = [f"{name}  [{doc['config_hash']}]", f"  {doc['summary']}", ""]
    rows = [
        ("params", f"{doc['params'] / 1e6:.3f} M  (deploy model, no aux head; "
                   f"{doc['params_train'] / 1e6:.3f} M as trained)"),
        ("compute, analytic", f"{_g(doc['flops']['analytic'])} GMACs (fvcore; the paper's FLOPs), {size}"),
    ]
    if doc["flops"]["fvcore"] is not None:
        rows.append(("compute, fvcore trace",
                     f"{_g(doc['flops']['fvcore'])} GMACs (fvcore; the paper's FLOPs), {size}"))
    rows.append(("paper convention, analytic",
                 f"{_g(doc['flops_paper']['analytic'])} GMACs (paper convention: large-kernel "
                 f"depthwise convs and na2d_av uncounted), {size}"))
    if doc["flops_paper"]["fvcore"] is not None:
        rows.append(("paper convention, fvcore",
                     f"{_g(doc['flops_paper']['fvcore'])} GMACs (paper convention), {size}"))
        match = "yes" if doc.get("analytic_matches_fvcore") else "NO - please report"
        rows.append(("analytic == fvcore", match))
    rows.append(("activation memory", f"{doc['memory_mb']:.2f} MiB peak (analytic, fp32 inference, {size})"))
    lat = doc.get("latency")
    if lat:
        rows.append(("latency", f"{lat['latency_ms']:.3f} ms "
                     f"+-{lat.get('latency_uncertainty_pct', float('nan')):.1f} % (95 %, from its rounds)  "
                     f"({lat['latency_dtype']}, batch {lat['latency_batch']}, {h}x{w}"
                     f"{', channels_last' if lat['latency_channels_last'] else ''})"))
        if "latency_raw_ms" in lat:
            rows.append(("latency as timed", f"{lat['latency_raw_ms']:.3f} ms (the machine ran at "
                         f"{lat['latency_speed']:.2f}x the yardstick's nominal speed)"))
        rows.append(("latency p90 / IQR / min, as timed", f"{lat['latency_p90_ms']:.3f} / "
                     f"{lat['latency_spread_ms']:.3f} / {lat['latency_min_ms']:.3f} ms over "
                     f"{lat['latency_repeats']} repeats"
                     f"{' (re-measured: its first rounds disagreed)' if lat.get('latency_remeasured') else ''}"))
        rows.append(("latency protocol", f"{lat.get('latency_protocol')} (nas.latency.protocol)"))
        rows.append(("latency device", lat["latency_device"]))
        for stage, ms in (lat.get("latency_stages_ms") or {}).items():
            rows.append((f"  stage {stage}", f"{ms:.3f} ms"))
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


@click.command("profile")
@click.option("--preset", type=click.Choice(["overlock_xt", "overlock_t", "overlock_s", "overlock_b"]),
              help="An official preset.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="A config file (YAML or JSON; a mapping of config fields, or {config: ...}).")
@click.option("--resolution", help="Input size: 224 or HEIGHTxWIDTH like 160x256 (default: the config's).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default="fp32", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for the latency (default: torch's).")
@click.option("--repeats", type=click.IntRange(min=2), default=None,
              help="Timed forwards [the measuring protocol's, as a study measures: nas.latency.measure.REPEATS].")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="Untimed forwards first [nas.latency.measure.WARMUP].")
@click.option("--channels-last", is_flag=True, help="Measure latency in channels_last memory format.")
@click.option("--stages", is_flag=True, help="Also break latency down per stage (torch.profiler).")
@click.option("--no-latency", is_flag=True, help="Skip the latency measurement.")
@click.option("--no-fvcore", is_flag=True, help="Skip the fvcore trace (analytic counts only).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def command(preset, config_file, resolution, batch, dtype, device, threads, repeats, warmup,
            channels_last, stages, no_latency, no_fvcore, as_json):
    """Params, GMACs (analytic and fvcore), activation memory and measured latency of one
    architecture (--preset NAME or --config FILE). Progress and an estimate of the time left go
    to stderr."""
    from overlock import PRESETS, ConfigError

    from nas.commands._options import check_device

    if (preset is None) == (config_file is None):
        raise click.UsageError("give exactly one of --preset NAME or --config FILE")
    res = parse_resolution(resolution)
    if not no_latency:
        check_device(device)
    try:
        config = PRESETS[preset] if preset else load_config_file(config_file)
        if res is not None:
            config = config.replace(resolution=res)
        doc = profile_config(config, batch=batch, dtype=dtype, device=device, threads=threads,
                             repeats=repeats, warmup=warmup, channels_last=channels_last,
                             stages=stages, latency=not no_latency, fvcore=not no_fvcore, progress=True)
    except (ConfigError, ValueError, OSError) as e:
        raise click.ClickException(" ".join(str(e).split())) from None
    doc["source"] = preset or os.path.abspath(config_file)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(render(doc, preset or config_file))
