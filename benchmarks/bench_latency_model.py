"""Latency model accuracy (issue 13): held-out rho and +-10 % share against the number of
measurements, beside FLOPs alone, next to the measurement noise floor.

    python benchmarks/bench_latency_model.py                                  # CPU, 1 thread, xt_t @ 96
    python benchmarks/bench_latency_model.py --space studies/spaces/quickstart.yaml --resolution 64
    python benchmarks/bench_latency_model.py --device cuda --resolution 224 --batch 64   # on a GPU
    python benchmarks/bench_latency_model.py --resolution 128 --sizes 50 --test 16 --noise 16 --profile 16

What it does:
1. draws `max(--sizes) + --test` distinct architectures of the space (seeded) and measures every one
   with `nas.measure.measure_latencies` (measure_latency's protocol, rounds interleaved over
   --group configs, as `overlock-nas latency fit` measures) in a fresh worker process (A);
2. measures the first `--noise` of them again in a second, separate process (B): the noise floor is
   the share of configs whose two measurements agree within +-10 % (and their Spearman rho);
3. for each training size n in --sizes (the first n measured configs; for n below the largest,
   also --draws random subsets), fits `nas.latency_model.fit` and predicts the --test held-out
   configs, which no fit ever sees: Spearman rho, Kendall tau, share within +-10 %, mean error;
   the same for FLOPs alone (a least-squares line ms = c0 + a * GMACs on the same n; and the raw
   rank correlation of GMACs with latency);
4. times `LatencyModel.predict` on fresh configs (the first query of a config, no memo);
5. states the model's coverage: the share of held-out configs within its stated 95 % margin;
6. with `--profile N`: the first N held-out configs are read by `overlock-nas profile` (a fresh
   process, one config: what a user checking a figure by hand runs), each in two separate
   processes back to back. Rows: "same config, two separate `profile` processes" (share within
   +-10 %, rho), `latency fit`'s reading against `profile`'s, and the model (largest training
   size) against each `profile` reading.

Prints a markdown table with the load average at start and end (the machine is shared), and writes
all numbers as JSON (--json-out).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _sample(space_path: str, n: int, seed: int, resolution: int | None):
    import space

    s = space.load_space(space_path)
    rng, seen, out = random.Random(seed), set(), []
    for _ in range(200 * n):
        if len(out) == n:
            break
        c = s.sample(rng)
        if resolution:
            c = c.replace(resolution=(resolution, resolution))
        if c.architecture_hash() not in seen:
            seen.add(c.architecture_hash())
            out.append(c)
    return out


# --------------------------------------------------------------------------------- worker
def _worker(args) -> None:
    """Measure the configs of --configs-json in this process; write their results to --out-json."""
    import torch

    from nas.measure import measure_latencies
    from overlock import OverLoCKConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    configs = [OverLoCKConfig.from_dict(d) for d in json.load(open(args.worker_configs))]
    results = []
    for i in range(0, len(configs), args.group):
        t0 = time.monotonic()
        chunk = measure_latencies(configs[i:i + args.group], group=args.group, device=args.device,
                                  batch=args.batch, dtype=args.dtype, threads=args.threads,
                                  warmup=args.warmup, repeats=args.repeats)
        for r in chunk:
            r["seconds"] = (time.monotonic() - t0) / len(chunk)
        results += chunk
        values = " ".join(f"{r['latency_ms']:.1f}" for r in chunk)
        print(f"  [{args.worker_label} {len(results)}/{len(configs)}] {values} ms ({time.monotonic() - t0:.0f} s, "
              f"load {_load()})", file=sys.stderr, flush=True)
    json.dump(results, open(args.worker_out, "w"))


def _measure(configs, args, label: str, tmp: str) -> list[dict]:
    cfg_path, out_path = os.path.join(tmp, f"{label}.configs.json"), os.path.join(tmp, f"{label}.out.json")
    json.dump([c.to_dict() for c in configs], open(cfg_path, "w"))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker-configs", cfg_path, "--worker-out", out_path,
           "--worker-label", label, "--device", args.device, "--batch", str(args.batch),
           "--dtype", args.dtype, "--warmup", str(args.warmup), "--repeats", str(args.repeats),
           "--group", str(args.group)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    subprocess.run(cmd, check=True)
    return json.load(open(out_path))


# ------------------------------------------------------------------------ `profile` processes
def _profile(config, args, tmp: str) -> float:
    """latency_ms of one `overlock-nas profile` run: a fresh process measuring one config, exactly
    as a user checks a figure by hand."""
    path = os.path.join(tmp, f"profile-{config.architecture_hash()}.yaml")
    with open(path, "w") as fh:
        fh.write(config.to_yaml())
    h, w = config.resolution
    cmd = [sys.executable, "-m", "nas.cli", "profile", "--config", path, "--resolution", f"{h}x{w}",
           "--device", args.device, "--batch", str(args.batch), "--dtype", args.dtype, "--no-fvcore", "--json"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return float(json.loads(out.stdout)["latency"]["latency_ms"])


def _profile_pairs(configs, args, tmp: str) -> tuple[list[float], list[float]]:
    """Each config measured by two separate `profile` processes, back to back."""
    first, second = [], []
    for i, config in enumerate(configs):
        first.append(_profile(config, args, tmp))
        second.append(_profile(config, args, tmp))
        print(f"  [profile {i + 1}/{len(configs)}] {first[-1]:.2f} {second[-1]:.2f} ms (load {_load()})",
              file=sys.stderr, flush=True)
    return first, second


def _agreement(a, b) -> dict:
    """How two readings of the same configs agree: share within +-10 % / +-5 %, median
    difference, Spearman rho."""
    from nas import latency_model as lm

    a, b = np.asarray(a, float), np.asarray(b, float)
    rel = np.abs(b / a - 1)
    return {"n": len(a), "within_10pct": float(np.mean(rel <= 0.10)), "within_5pct": float(np.mean(rel <= 0.05)),
            "median_diff": float(np.median(rel)), "spearman": lm.cv_statistics(b, a)["spearman"]}


def _agreement_text(d: dict) -> str:
    return (f"{100 * d['within_10pct']:.0f} % within +-10 %, {100 * d['within_5pct']:.0f} % within +-5 %, "
            f"median difference {100 * d['median_diff']:.1f} %, rho {d['spearman']:.3f} ({d['n']} configs)")


def _cross_process(model, test_configs, test_y, profiled) -> dict:
    """Readings of the held-out configs from other processes, against each other and the model
    (fitted on the largest training size): what a user who checks a figure by hand sees."""
    from nas import latency_model as lm

    pred = np.array([model.predict(c) for c in test_configs])
    out = {"model margin coverage (held-out configs within the stated margin, "
           f"+-{100 * model.margin:.1f} %)": f"{100 * np.mean(np.abs(pred / test_y - 1) <= model.margin):.0f} % "
                                             f"of {len(test_y)}"}
    first, second = profiled
    if not first:
        return out
    k = len(first)
    out["same config, two separate `profile` processes"] = _agreement(first, second)
    out["same config, `latency fit`'s reading vs `profile`'s (first)"] = _agreement(test_y[:k], first)
    for name, readings in (("first", first), ("second", second)):
        stats = lm.cv_statistics(pred[:k], readings)
        out[f"model vs `profile` ({name} process), held-out"] = {
            "n": k, "within_10pct": stats["within_10pct"], "within_5pct": float(np.mean(
                np.abs(pred[:k] / np.asarray(readings) - 1) <= 0.05)),
            "median_diff": float(np.median(np.abs(pred[:k] / np.asarray(readings) - 1))),
            "spearman": stats["spearman"]}
    return out


# ------------------------------------------------------------------------------------ fits
def _flops_line(train_x, train_y, test_x):
    from nas import latency_model as lm

    coef = lm._solve(lm._flops_features(train_x), train_y, None, 0.0)
    return np.maximum(lm._flops_features(test_x) @ coef, 1e-9)


def _evaluate(configs, y, sizes, n_test, draws, settings, seed):
    from nas import latency_model as lm

    x = np.stack([lm.features(c, settings) for c in configs])
    test = slice(len(y) - n_test, len(y))
    test_y, test_x = y[test], x[test]
    flops = lm._flops_features(test_x)[:, 1]
    rows = []
    pool = len(y) - n_test
    rng = np.random.default_rng(seed)
    for n in sizes:
        subsets = [np.arange(n)] + ([rng.choice(pool, n, replace=False) for _ in range(draws)]
                                    if n < pool else [])
        model_stats, line_stats, fit_s, margins, cv_within = [], [], [], [], []
        for idx in subsets:
            t0 = time.perf_counter()
            model = lm.fit([configs[i] for i in idx], y[idx], settings)
            fit_s.append(time.perf_counter() - t0)
            pred = np.array([model.predict(c) for c in configs[test]])
            model_stats.append(lm.cv_statistics(pred, test_y))
            line_stats.append(lm.cv_statistics(_flops_line(x[idx], y[idx], test_x), test_y))
            margins.append(model.margin)
            cv_within.append(model.cv["within_10pct"])
        rows.append({"n": n, "subsets": len(subsets),
                     "model": {k: float(np.mean([s[k] for s in model_stats]))
                               for k in ("spearman", "kendall", "within_10pct", "mape")},
                     "flops_line": {k: float(np.mean([s[k] for s in line_stats]))
                                    for k in ("spearman", "kendall", "within_10pct", "mape")},
                     "margin": float(np.median(margins)), "cv_within_10pct": float(np.mean(cv_within)),
                     "fit_s": float(np.mean(fit_s))})
    flops_rho = lm.cv_statistics(flops, test_y)["spearman"]
    return rows, flops_rho


def _predict_time(model, configs) -> float:
    """Mean seconds of a first (un-memoised) predict."""
    model._memo.clear()
    t0 = time.thread_time()     # CPU time: on a loaded machine the wall clock times the queue
    for c in configs:
        model.predict(c)
    return (time.thread_time() - t0) / len(configs)


def parser() -> argparse.ArgumentParser:
    """The benchmark's options; the measuring protocol's settings default to `nas.measure`'s, so
    its readings are comparable with `profile`'s, a study's and `latency fit`'s."""
    from nas.measure import GROUP, REPEATS, WARMUP

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="studies/spaces/xt_t.yaml")
    p.add_argument("--resolution", type=int, default=96)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (ignored on CUDA)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--warmup", type=int, default=WARMUP)
    p.add_argument("--repeats", type=int, default=REPEATS)
    p.add_argument("--group", type=int, default=GROUP,
                   help="configs whose rounds are interleaved (nas.measure.measure_latencies)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 50])
    p.add_argument("--test", type=int, default=24, help="held-out configs no fit sees")
    p.add_argument("--noise", type=int, default=16, help="configs measured twice (separate processes)")
    p.add_argument("--profile", type=int, default=0,
                   help="held-out configs also read by `overlock-nas profile`, each in two separate "
                        "processes back to back (the user's check; 0: skip)")
    p.add_argument("--draws", type=int, default=5, help="extra random training subsets per size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default=None)
    p.add_argument("--worker-configs", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("--worker-label", default="A", help=argparse.SUPPRESS)
    return p


def main():
    args = parser().parse_args()
    if args.device.startswith("cuda"):
        args.threads = None
    if args.worker_configs:
        return _worker(args)

    from nas import latency_model as lm

    load_start, t_start = _load(), time.monotonic()
    configs = _sample(args.space, max(args.sizes) + args.test, args.seed, args.resolution)
    print(f"{len(configs)} distinct architectures of {args.space} at {args.resolution}x{args.resolution}, "
          f"batch {args.batch}, {args.dtype}, device {args.device}, threads {args.threads}; load {load_start}",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        first = _measure(configs, args, "A", tmp)
        second = _measure(configs[:args.noise], args, "B", tmp) if args.noise else []
        held_out = configs[len(configs) - args.test:][:args.profile]
        profiled = _profile_pairs(held_out, args, tmp) if held_out else ([], [])
    y = np.array([r["latency_ms"] for r in first])
    dev = first[0]["latency_device"]
    settings = {"device": dev, "resolution": [args.resolution] * 2, "batch": args.batch,
                "dtype": args.dtype, "channels_last": False, "threads": args.threads}
    rows, flops_rho = _evaluate(configs, y, args.sizes, args.test, args.draws, settings, args.seed)
    noise = _agreement(y[:len(second)], [r["latency_ms"] for r in second]) if second else {}
    model = lm.fit(configs[:max(args.sizes)], y[:max(args.sizes)], settings)
    cross = _cross_process(model, configs[len(configs) - args.test:], y[len(y) - args.test:], profiled)
    per_query = _predict_time(model, _sample(args.space, 50, args.seed + 1, args.resolution))
    seconds = float(np.mean([r["seconds"] for r in first]))
    load_end = _load()

    print(f"\n### {args.space} at {args.resolution}x{args.resolution}, batch {args.batch}, {args.dtype}, "
          f"{dev}\n")
    print(f"protocol: measure_latency(warmup={args.warmup}, repeats={args.repeats}) "
          f"[{first[0].get('latency_protocol', 'median of repeats')}], {seconds:.1f} s a measurement; "
          f"held-out set: {args.test} configs; load average {load_start} at start, {load_end} at end\n")
    print("| measurements | model rho | model tau | model within +-10 % | model mean error | stated margin (95 %) "
          "| FLOPs line rho | FLOPs line within +-10 % | FLOPs line mean error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m, f = r["model"], r["flops_line"]
        print(f"| {r['n']} ({r['subsets']} draws) | {m['spearman']:.3f} | {m['kendall']:.3f} | "
              f"{100 * m['within_10pct']:.0f} % | {100 * m['mape']:.1f} % | +-{100 * r['margin']:.0f} % | "
              f"{f['spearman']:.3f} | {100 * f['within_10pct']:.0f} % | {100 * f['mape']:.1f} % |")
    print(f"\nGMACs (fvcore; the paper's FLOPs) alone, rank vs latency on the held-out set: rho {flops_rho:.3f}")
    if noise:
        print(f"noise floor (same config, two separate processes, rounds interleaved as `latency fit` "
              f"measures): {_agreement_text(noise)}")
    for label, d in cross.items():
        print(f"{label}: {_agreement_text(d) if 'within_10pct' in d else d}")
    print(f"predict: {1e3 * per_query:.3f} ms CPU time a query (first query of a config, cost model walk "
          f"included; repeated queries are memoised)")
    print(f"total {time.monotonic() - t_start:.0f} s")
    if args.json_out:
        json.dump({"args": vars(args), "device": dev, "rows": rows, "flops_rank_rho": flops_rho,
                   "noise": noise, "cross_process": cross, "profile_ms": [list(v) for v in profiled],
                   "predict_ms": 1e3 * per_query, "load_start": load_start,
                   "load_end": load_end, "measure_s": seconds,
                   "latencies_ms": y.tolist(), "second_ms": [r["latency_ms"] for r in second],
                   "configs": [c.to_dict() for c in configs]}, open(args.json_out, "w"), indent=1)


if __name__ == "__main__":
    main()
