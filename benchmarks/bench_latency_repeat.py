"""Do two `overlock-nas profile` processes read the same latency? (issue 29)

    python benchmarks/bench_latency_repeat.py                         # 16 held-out xt_t configs, 128x128, 1 thread
    python benchmarks/bench_latency_repeat.py --configs 4 --processes 3
    python benchmarks/bench_latency_repeat.py --results benchmarks/results/latency_repeat.jsonl

What a user does to check a study's figure by hand: each config is read by `--processes` separate
`overlock-nas profile --config C --resolution R --device cpu --threads T --no-fvcore --json`
processes. The passes run one after the other (every config once, then every config again), so the
readings of one config are minutes apart, at different moments of the machine. Printed:

- agreement between the passes: the share of configs whose readings agree within +-10 % and
  +-5 % (the worst pair of passes per config), the median difference, Spearman's rank agreement;
- each reading's own uncertainty (`latency_uncertainty_pct`, from its rounds) and whether the
  readings' differences lie within it; how often `profile` re-measured or warned;
- `profile`'s wall time per config (process start, model build and measurement);
- the latency model of these settings, when this machine has one (`overlock-nas latency fit
  studies/spaces/xt_t.yaml --measurements 50 --device cpu --resolution 128 --threads 1`): its rank
  agreement with the readings and its share within +-10 %, over configs the fit never measured
  (the held-out configs are drawn with another seed, and any that the fit measured is dropped);
- the machine: CPU model, cores, frequency governor where readable, torch, load average.

`--results FILE` appends one JSON line (with the command, date and load) to FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def _held_out(space_path: str, n: int, seed: int, resolution: int, fit_seed: int, fit_n: int) -> list:
    """`n` distinct architectures drawn with `seed`, none of those `latency fit --seed fit_seed
    --measurements fit_n` measures (its own sampler, so the sets are told apart exactly)."""
    import space
    from nas.commands.latency import _sample

    s = space.load_space(space_path)
    res = (resolution, resolution)
    fitted = {c.architecture_hash() for c in _sample(s, fit_n, fit_seed, res)}
    rng, seen, out = random.Random(seed), set(fitted), []
    for _ in range(200 * n):
        if len(out) == n:
            break
        c = s.sample(rng).replace(resolution=res)
        if c.architecture_hash() not in seen:
            seen.add(c.architecture_hash())
            out.append(c)
    return out


def _profile(path: Path, args) -> dict:
    """One `profile` process: its latency reading, with its wall seconds and stderr."""
    cmd = [sys.executable, "-m", "nas.cli", "profile", "--config", str(path), "--resolution",
           str(args.resolution), "--device", "cpu", "--threads", str(args.threads), "--no-fvcore", "--json"]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env=os.environ | {"PYTHONPATH": str(REPO)})
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"profile failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    reading = json.loads(done.stdout)["latency"]
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning")]
    return reading | {"seconds": seconds, "warned": bool(warned)}


def _agreement(readings: np.ndarray) -> dict:
    """readings: configs x passes. Worst pair of passes per config."""
    from scipy.stats import spearmanr

    worst = np.max(readings, axis=1) / np.min(readings, axis=1) - 1
    rhos = [spearmanr(readings[:, i], readings[:, j])[0]
            for i in range(readings.shape[1]) for j in range(i + 1, readings.shape[1])]
    return {"within_10pct": float(np.mean(worst <= 0.10)), "within_5pct": float(np.mean(worst <= 0.05)),
            "median_difference_pct": float(100 * np.median(worst)), "rank_agreement": float(min(rhos))}


def _model_agreement(configs, readings: np.ndarray, args) -> dict | None:
    """The saved latency model of these settings against the mean reading of each config."""
    from scipy.stats import spearmanr

    from nas.latency import model as lm
    from nas.latency.device import device_string
    from nas.latency.store import measurement_settings

    device = device_string("cpu", args.threads)
    settings = measurement_settings(device, batch=1, dtype="fp32", channels_last=False,
                                    threads=args.threads, resolution=args.resolution)
    path = lm.model_path(device, settings)
    if not path.exists():
        return None
    model = lm.load(path)
    predicted = np.array([model.predict(c) for c in configs])
    measured = readings.mean(axis=1)
    return {"model_rank_agreement": float(spearmanr(predicted, measured)[0]),
            "model_within_10pct": float(np.mean(np.abs(predicted / measured - 1) <= 0.10)),
            "model_measurements": len(model.latencies_ms or []),
            "model_protocol": model.settings.get("protocol")}


def _machine() -> dict:
    import torch

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        governor = "not readable (no cpufreq: a virtual machine's host sets the clock)"
    return {"cpu": cpu, "cores": os.cpu_count(), "governor": governor, "torch": torch.__version__}


def _round(summary: dict) -> None:
    """Shares as whole percents, the rest to the digits a table shows."""
    for key, value in summary.items():
        if key.endswith(("within_10pct", "within_5pct")) and isinstance(value, float):
            summary[key] = round(100 * value)
        elif key.endswith(("rank_agreement", "difference_within_stated")) and isinstance(value, float):
            summary[key] = round(value, 3)
        elif key.endswith(("_pct", "_seconds_median", "_seconds_max")) and isinstance(value, float):
            summary[key] = round(value, 1)


def _load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default=str(REPO / "studies" / "spaces" / "xt_t.yaml"))
    p.add_argument("--configs", type=int, default=16)
    p.add_argument("--processes", type=int, default=2, help="separate `profile` processes per config")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=29, help="draws the held-out configs")
    p.add_argument("--fit-seed", type=int, default=0, help="`latency fit --seed` of the model compared")
    p.add_argument("--fit-measurements", type=int, default=50, help="`latency fit --measurements` of it")
    p.add_argument("--results", help="append the summary as one JSON line to this file")
    args = p.parse_args()

    from nas.latency.protocol import VERSION

    configs = _held_out(args.space, args.configs, args.seed, args.resolution, args.fit_seed,
                        args.fit_measurements)
    load_start, started = _load(), time.monotonic()
    readings = [[None] * args.processes for _ in configs]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, c in enumerate(configs):
            paths.append(Path(tmp) / f"config-{i}.json")
            paths[-1].write_text(json.dumps({"config": c.to_dict()}))
        for run in range(args.processes):
            for i, path in enumerate(paths):
                r = _profile(path, args)
                readings[i][run] = r
                print(f"[pass {run + 1}/{args.processes}, config {i + 1}/{len(configs)}] "
                      f"{r['latency_ms']:.2f} ms +-{r.get('latency_uncertainty_pct', float('nan')):.1f} % "
                      f"in {r['seconds']:.1f} s (load {_load()})", file=sys.stderr, flush=True)
    ms = np.array([[r["latency_ms"] for r in row] for row in readings])
    raw = np.array([[r.get("latency_raw_ms", r["latency_ms"]) for r in row] for row in readings])
    speed = np.array([[r.get("latency_speed", 1.0) for r in row] for row in readings])
    unc = np.array([[r.get("latency_uncertainty_pct", np.nan) for r in row] for row in readings])
    seconds = np.array([[r["seconds"] for r in row] for row in readings])
    diff_pct = 100 * (np.max(ms, axis=1) / np.min(ms, axis=1) - 1)
    summary = {
        "benchmark": "latency repeatability, separate `profile` processes",
        "configs": len(configs), "processes": args.processes, "resolution": args.resolution,
        "threads": args.threads, "protocol_version": VERSION,
        "protocol": readings[0][0].get("latency_protocol"),
        **_agreement(ms),
        **{f"as_timed_{k}": v for k, v in _agreement(raw).items()},
        "speed_range": [float(speed.min()), float(speed.max())],
        "stated_uncertainty_median_pct": float(np.nanmedian(unc)),
        "difference_within_stated": float(np.mean(diff_pct <= np.nanmax(unc, axis=1) * 2)),
        "remeasured": int(sum(r.get("latency_remeasured", False) for row in readings for r in row)),
        "warned": int(sum(r["warned"] for row in readings for r in row)),
        "profile_seconds_median": float(np.median(seconds)), "profile_seconds_max": float(np.max(seconds)),
        **(_model_agreement(configs, ms, args) or {"model_rank_agreement": None}),
        **_machine(),
        "readings_ms": ms.round(3).tolist(),
        "command": "python benchmarks/bench_latency_repeat.py " + " ".join(map(shlex.quote, sys.argv[1:])),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load": f"{load_start} -> {_load()}", "minutes": round((time.monotonic() - started) / 60, 1),
    }
    _round(summary)
    print(f"\n{summary['configs']} configs x {args.processes} `profile` processes at {args.resolution}x"
          f"{args.resolution}, {args.threads} thread(s), protocol {VERSION} ({summary['protocol']})\n"
          f"  within +-10 %: {summary['within_10pct']} %   within +-5 %: {summary['within_5pct']} %   "
          f"median difference {summary['median_difference_pct']:.1f} %   rank agreement "
          f"{summary['rank_agreement']:.3f}\n"
          f"  as timed (latency_raw_ms, the same forwards without the yardstick): within +-10 %: "
          f"{summary['as_timed_within_10pct']} %, rank agreement {summary['as_timed_rank_agreement']:.3f}; "
          f"machine speed against the yardstick's nominal {summary['speed_range'][0]:.2f}-"
          f"{summary['speed_range'][1]:.2f}\n"
          f"  stated uncertainty (median) +-{summary['stated_uncertainty_median_pct']:.1f} %; "
          f"re-measured {summary['remeasured']}, warned {summary['warned']} of {ms.size} readings\n"
          f"  profile wall time median {summary['profile_seconds_median']:.1f} s, max "
          f"{summary['profile_seconds_max']:.1f} s\n"
          f"  latency model: rank agreement {summary['model_rank_agreement']}, within +-10 % "
          f"{summary.get('model_within_10pct')} %\n"
          f"  {summary['cpu']}, {summary['cores']} cores, governor: {summary['governor']}, torch "
          f"{summary['torch']}, load {summary['load']}, {summary['minutes']} min")
    if args.results:
        with open(args.results, "a") as f:
            f.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
