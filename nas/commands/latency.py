"""`overlock-nas latency`: fit a per-device latency model, and predict with it.

    overlock-nas latency fit studies/spaces/xt_t.yaml --measurements 50 --resolution 128 --threads 1
    overlock-nas latency fit studies/quickstart.yaml --out model.json     # a study: its latency settings
    overlock-nas latency predict model.json --config trial.json

`fit` samples distinct architectures from the space (a study file's space and latency settings, or
a space file), measures each with `nas.latency.measure.measure_latencies` unless the device's
latency store already holds it (every measurement goes into that store, shared with every study on
the device), fits `nas.latency.model` and prints its leave-one-out Spearman rho, share within
+-10 % and stated margin beside a FLOPs-alone line. The model is written to --out, or beside the
latency store (`nas.latency.model.model_path`), where `latency: {model: auto}` finds it.
"""

from __future__ import annotations

import json
import os
import random
import time

import click

DTYPES = ("fp32", "fp16", "bf16")
SAMPLE_TRIES = 50   # draws per wanted config before concluding the space has no more


def _load_source(path: str):
    """(space, latency defaults, device default) from a study file or a space file."""
    import yaml

    from space import SpaceError, load_space

    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except OSError as e:
        raise click.ClickException(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise click.ClickException(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if isinstance(data, dict) and "space" in data and "dimensions" not in data:
        from nas.study import StudyFileError, load_study_file

        try:
            spec = load_study_file(path)
        except StudyFileError as e:
            raise click.ClickException(str(e)) from None
        return spec.space, spec.latency.model_dump(), spec.device
    try:
        return load_space(path), {}, None
    except (SpaceError, ValueError) as e:
        raise click.ClickException(f"{path}: {' '.join(str(e).split())}") from None


def _sample(space, n: int, seed: int, resolution) -> list:
    """Up to `n` configs of distinct architectures, drawn with `seed` (the same seed draws the same
    configs first, so a larger --measurements extends an earlier fit's set)."""
    rng = random.Random(seed)
    seen, out = set(), []
    misses = 0
    while len(out) < n and misses < SAMPLE_TRIES * n:
        config = space.sample(rng)
        if resolution is not None:
            config = config.replace(resolution=resolution)
        key = config.architecture_hash()
        if key in seen:
            misses += 1
            continue
        seen.add(key)
        out.append(config)
    return out


@click.group("latency")
def command():
    """Per-device latency models: fit from measurements, predict in under a millisecond."""


@command.command("fit")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--measurements", type=click.IntRange(min=3), default=50, show_default=True,
              help="Distinct architectures to measure (or reuse from the device's store).")
@click.option("--device", default=None,
              help="cpu, cuda, cuda:N or auto (default: the study's device, else cpu).")
@click.option("--resolution", help="Input size: 224 or HEIGHTxWIDTH (default: the space's).")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Images per forward [study's, else 1].")
@click.option("--dtype", type=click.Choice(DTYPES), default=None, help="[study's, else fp32]")
@click.option("--channels-last", "channels_last", is_flag=True, default=None,
              help="Measure in channels_last memory format [study's, else off].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads of each measurement [study's, else torch's default].")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="Untimed forwards per measurement [study's, else measure_latency's].")
@click.option("--repeats", type=click.IntRange(min=2), default=None,
              help="Timed forwards per measurement [study's, else measure_latency's].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampled configs.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Model file to write (default: beside the device's latency store, where an earlier "
                   "model is kept under a time-stamped name).")
@click.option("--json", "as_json", is_flag=True, help="Print the fitted model's statistics as JSON.")
def fit_command(source, measurements, device, resolution, batch, dtype, channels_last, threads,
                warmup, repeats, seed, out, as_json):
    """Measure up to --measurements architectures of SOURCE (a space or study file), fit a latency
    model and print its cross-validated accuracy. Progress and an estimate of the time left go to
    stderr."""
    import torch

    from nas.commands._options import check_device
    from nas.commands.profile import parse_resolution
    from nas.latency import model as latency_model
    from nas.latency.device import device_string, resolve_device
    from nas.latency.store import device_store, measurement_settings, store_key

    if out is not None and os.path.isfile(out):
        try:     # refuse before measuring: --out replaces only an earlier model
            latency_model.load(out)
        except latency_model.LatencyModelError:
            raise click.ClickException(f"--out {out} exists and is not a latency model: fit never "
                                       "replaces another file; choose another --out") from None
    space, study_latency, study_device = _load_source(source)
    device = resolve_device(check_device(device or study_device or "cpu"))
    res = parse_resolution(resolution)
    batch = batch or study_latency.get("batch") or 1
    dtype = dtype or study_latency.get("dtype") or "fp32"
    channels_last = bool(study_latency.get("channels_last") if channels_last is None else channels_last)
    cuda = device.startswith("cuda")
    threads = None if cuda else (threads or study_latency.get("threads") or torch.get_num_threads())
    protocol = {k: study_latency[k] for k in ("warmup", "repeats") if k in study_latency}
    protocol.update({k: v for k, v in (("warmup", warmup), ("repeats", repeats)) if v is not None})

    configs = _sample(space, measurements, seed, res)
    if len(configs) < 3:
        raise click.ClickException(f"{source}: only {len(configs)} distinct architectures; a model "
                                   "needs at least 3")
    if len(configs) < measurements:
        click.echo(f"note: the space has {len(configs)} distinct architectures; fitting on all of them",
                   err=True)
    dev_name = device_string(device, threads)
    resolutions = {tuple(c.resolution) for c in configs}
    settings = measurement_settings(dev_name, batch=batch, dtype=dtype, channels_last=channels_last,
                                    threads=threads,
                                    resolution=resolutions.pop() if len(resolutions) == 1 else None)
    store = device_store(dev_name)
    keys = [store_key(c, settings) for c in configs]
    stored = store.entries()          # one read of the store, however many keys it is asked
    found = {k: stored.get(k) for k in keys}
    todo = [i for i, k in enumerate(keys) if found[k] is None]
    reused = len(configs) - len(todo)
    if reused:
        click.echo(f"{reused} of {len(configs)} architectures already in the device's store", err=True)
    measured = _measure(store, [configs[i] for i in todo], [keys[i] for i in todo],
                        dict(device=device, batch=batch, dtype=dtype, channels_last=channels_last,
                             threads=threads, **protocol))
    found.update(measured)
    latencies = [float(found[k]["latency_ms"]) for k in keys]
    model = latency_model.fit(configs, latencies, settings)
    path = out or latency_model.model_path(dev_name, settings)
    kept = _keep_previous(path) if out is None else None   # --out names its file; the default is shared
    model.save(path)
    if kept is not None:
        click.echo(f"the previous model for these settings is kept as {kept}", err=True)
    _report(model, path, len(configs) - reused, reused, as_json)


def _measure(store, configs: list, keys: list[str], settings: dict) -> dict[str, dict]:
    """Measure `configs` GROUP at a time (their rounds interleaved, so the machine's load falls on
    all of them alike), each group's readings put in `store` at once; progress and an estimate of
    the time left on stderr. Returns {key: reading}."""
    from nas.commands._progress import MeasuringProgress, duration, protocol_line
    from nas.latency.measure import GROUP, REPEATS, ROUNDS, WARMUP, measure_latencies

    if not configs:
        return {}
    click.echo("latency fit: " + protocol_line(len(configs), settings.get("warmup", WARMUP),
                                               settings.get("repeats", REPEATS), ROUNDS, GROUP), err=True)
    progress, out, t0 = MeasuringProgress(len(configs), "latency fit"), {}, time.monotonic()
    for start in range(0, len(configs), GROUP):
        chunk, chunk_keys = configs[start:start + GROUP], keys[start:start + GROUP]
        progress.begin(len(chunk))
        try:
            results = measure_latencies(chunk, group=GROUP, progress=progress, **settings)
        except (ValueError, RuntimeError) as e:
            raise click.ClickException(f"measuring {', '.join(c.config_hash() for c in chunk)}: "
                                       f"{' '.join(str(e).split())}") from None
        store.put_many(dict(zip(chunk_keys, results)))
        out.update(zip(chunk_keys, results))
        progress.end()
        values = " ".join(f"{r['latency_ms']:.2f}" for r in results)
        left = f", about {duration(progress.left_s())} left" if start + GROUP < len(configs) else ""
        click.echo(f"measured {start + len(chunk)}/{len(configs)}: {values} ms  "
                   f"{time.monotonic() - t0:.0f} s{left}", err=True)
    return out


def _keep_previous(path) -> "Path | None":
    """Rename an existing default model to `<name>.<its mtime, UTC>.json` so a fit never silently
    replaces the device's stored model; the new path, or None when there was none."""
    import datetime as dt
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return None
    stamp = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    kept, n = path.with_name(f"{path.stem}.{stamp}{path.suffix}"), 1
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.stem}.{stamp}-{n}{path.suffix}")
    path.rename(kept)
    return kept


def _report(model, path, measured: int, reused: int, as_json: bool) -> None:
    cv, base = model.cv, model.cv["flops_baseline"]
    if as_json:
        click.echo(json.dumps({"path": str(path), "measured": measured, "reused": reused,
                               "settings": model.settings, "margin": model.margin, "cv": cv}, indent=2))
        return
    margin = "unbounded (too few measurements)" if model.margin == float("inf") else f"+-{100 * model.margin:.1f} %"
    click.echo(f"latency model: {path}")
    click.echo(f"  device      {model.settings['device']}")
    click.echo(f"  settings    resolution {model.settings['resolution'] or 'per config'}, batch "
               f"{model.settings['batch']}, {model.settings['dtype']}"
               f"{', channels_last' if model.settings['channels_last'] else ''}, threads "
               f"{model.settings['threads'] or '-'}")
    click.echo(f"  data        {cv['n']} architectures ({measured} measured now, {reused} from the store)")
    click.echo(f"  leave-one-out  Spearman rho {cv['spearman']:.3f}, within +-10 % {100 * cv['within_10pct']:.0f} %, "
               f"mean error {100 * cv['mape']:.1f} %, margin {margin} (95 %)")
    click.echo(f"  FLOPs alone    Spearman rho {base['spearman']:.3f}, within +-10 % {100 * base['within_10pct']:.0f} %, "
               f"mean error {100 * base['mape']:.1f} %")


@command.command("predict")
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False),
              help="A config file (YAML or JSON; a mapping of config fields, or {config: ...}).")
@click.option("--json", "as_json", is_flag=True, help="Print prediction, interval and settings as JSON.")
def predict_command(model_file, config_file, as_json):
    """Predicted latency (ms) of one architecture by a fitted latency model."""
    from overlock import ConfigError
    from nas.commands.profile import load_config_file
    from nas.latency import model as latency_model

    try:
        model = latency_model.load(model_file)
        config = load_config_file(config_file)
    except FileNotFoundError as e:
        raise click.ClickException(f"{e.filename}: no such file") from None
    except (ConfigError, ValueError, OSError) as e:
        raise click.ClickException(' '.join(str(e).split())) from None
    ms = model.predict(config)
    low, high = model.interval(config)
    if as_json:
        click.echo(json.dumps({"latency_ms": ms, "interval_ms": [low, high], "margin": model.margin,
                               "settings": model.settings}))
    else:
        click.echo(f"{ms:.3f}")
