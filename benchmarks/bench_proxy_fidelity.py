"""How well do cheap signals rank architectures the way full-budget training does? (issue 12)

Samples N distinct architectures of a space (seeded), trains each to the full budget with the
train evaluator under two seeds, and reports Spearman rho and Kendall tau between the full-budget
validation accuracy and
  (a) the score at each rung (the evaluator trains to a rung on the *full-budget* schedule, so the
      rung-r score is the epoch-r accuracy of the full run: what successive halving compares),
  (b) the zero-cost proxies synflow, NASWOT, ZiCo, and the parameter and multiply-add counts,
  (c) optionally (--short-schedule) a separate run of r epochs with its own warm-up + cosine
      (EcoNAS-style reduced training), to tell the rung's schedule from its length.
A trained signal from one seed is compared with the *other* seed's final accuracy (averaged over
both orders), so its training noise is not counted as agreement; the seed-vs-seed agreement is rho
between the two seeds' finals (not a bound on the other rows: docs/explanation/search.md says why). Zero-cost signals are compared with each seed's final (averaged).

    nice -n 10 python benchmarks/bench_proxy_fidelity.py --space studies/spaces/quickstart.yaml \\
        --dataset digits --n 20 --epochs 4 --rungs 1 2 --resolution 32 --short-schedule 1 \\
        --out docs/explanation/search.md

  (d) optionally (--supernet-epochs N or --supernet DIR, issue 19) the weights each architecture
      inherits from a supernet trained once on the same training images (nas.supernet): validation
      accuracy and loss with batch norm re-estimated per sub-network and with the inherited
      statistics, and the seconds that scoring takes against a rung-1 epoch.

`--dataset digits` writes scikit-learn's digits as an ImageFolder (nas.sample_sets),
`--dataset photo-patches` / `photo-regions` crops of its two sample photos; any other value is a
`dataset:` mapping in YAML/JSON, e.g. '{kind: imagefolder, path: /data/pets}'.
Results are appended to `--work/results.jsonl` as they come, so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROXIES = ("synflow", "naswot", "zico")


def sample_architectures(space, n: int, seed: int) -> list:
    """`n` distinct configs (by hash) drawn from `space` with one seeded generator."""
    rng, out, seen = random.Random(seed), [], set()
    for _ in range(n * 200):
        config = space.sample(rng)
        if config.config_hash() not in seen:
            seen.add(config.config_hash())
            out.append(config)
            if len(out) == n:
                return out
    raise SystemExit(f"the space has fewer than {n} distinct architectures ({len(out)} found)")


def resolve_dataset(text: str, work: Path) -> dict:
    import yaml

    from nas.sample_sets import SAMPLE_SETS, write_sample_set

    if text in SAMPLE_SETS:
        return {"kind": "imagefolder", "path": str(write_sample_set(text, work / text))}
    value = yaml.safe_load(text)
    if not isinstance(value, dict):
        raise SystemExit(f"--dataset {text!r}: {', '.join(SAMPLE_SETS)} or a dataset mapping")
    return value


class Results:
    """results.jsonl: one record per (architecture, job); reruns skip what is there."""

    def __init__(self, path: Path):
        self.path, self.rows = path, {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[(row["hash"], row["job"])] = row

    def get(self, chash: str, job: str):
        return self.rows.get((chash, job))

    def put(self, row: dict) -> None:
        self.rows[(row["hash"], row["job"])] = row
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def import_finals(path: Path, configs, args, results: Results) -> int:
    """Take the stand-alone trainings of an earlier run from its markdown (the per-architecture
    table `write_markdown` writes: accuracy per epoch, seed A / seed B) instead of training again.
    Sound because training is deterministic per seed (docs/explanation/search.md: a re-run gave every
    row identical); the rows hold the accuracies only, so the loss rows are left out. Returns the
    number of (architecture, seed) trainings imported."""
    by_summary = {c.summary().replace("|", "/"): c for c in configs}
    count = 0
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] not in by_summary:
            continue
        chash = by_summary[cells[0]].config_hash()
        for seed, text in zip(args.seeds, cells[3:5]):
            if not results.get(chash, f"train/{seed}"):
                results.put({"hash": chash, "job": f"train/{seed}", "history": [float(v) for v in text.split()],
                             "source": f"{path} (imported)"})
                count += 1
    return count


def run_jobs(configs, args, dataset: dict, results: Results, work: Path) -> None:
    import space as space_pkg
    from nas.evaluators import get_evaluator

    base = dict(args.train_settings, dataset=dataset, epochs=args.epochs, save_weights=False,
                resolution=args.resolution)
    full = get_evaluator("train", base)
    proxies = {p: get_evaluator(p, {"dataset": dataset, "resolution": args.resolution,
                                    "batch_size": args.proxy_batch}) for p in PROXIES}
    jobs = [("cost", None)] + [(p, None) for p in PROXIES] + [("train", s) for s in args.seeds]
    jobs += [(f"short{r}", args.seeds[0]) for r in args.short_schedule]
    for i, config in enumerate(configs):
        chash = config.config_hash()
        for job, seed in jobs:
            name = job if seed is None else f"{job}/{seed}"
            if results.get(chash, name):
                continue
            t0 = time.perf_counter()
            if job == "cost":
                cost = space_pkg.complexity(config, resolution=args.resolution)
                row = {"params": cost.params_inference, "flops": cost.flops,
                       "summary": config.summary()}
            elif job in PROXIES:
                row = {"score": proxies[job].evaluate(config, seed=0)["score"]}
            elif job == "train":
                r = full.evaluate(config, budget_epochs=None, seed=seed, workdir=str(work))
                row = {"history": r["history"], "train_loss": r["train_loss"], "val_loss": r["val_loss"]}
            else:  # shortR: a separate R-epoch budget with its own schedule
                short = get_evaluator("train", dict(base, epochs=int(job[5:])))
                row = {"history": short.evaluate(config, budget_epochs=None, seed=seed,
                                                 workdir=str(work))["history"]}
            row.update(hash=chash, job=name, wall_s=round(time.perf_counter() - t0, 2))
            results.put(row)
            print(f"[{i + 1}/{len(configs)}] {chash[:10]} {name:10s} {row['wall_s']:7.1f} s "
                  f"{json.dumps({k: v for k, v in row.items() if k in ('score', 'history')})}",
                  flush=True)


def train_or_find_supernet(args, dataset: dict, work: Path) -> Path | None:
    """The supernet the supernet rows use: --supernet DIR, or one trained (resumably) under
    `work` on the same data set, resolution and train settings as the stand-alone runs."""
    if args.supernet:
        return Path(args.supernet)
    if not args.supernet_epochs:
        return None
    from nas.supernet.train import TRAIN_KEYS, train_supernet

    out = work / f"supernet-{args.supernet_rule}-e{args.supernet_epochs}"
    settings = {k: v for k, v in args.train_settings.items() if k in TRAIN_KEYS}
    settings.update(args.supernet_settings)
    print(f"training the supernet into {out} ({args.supernet_epochs} epochs, {args.supernet_rule})", flush=True)
    card = train_supernet(args.space, dataset, out, epochs=args.supernet_epochs, seed=args.seeds[0],
                          rule=args.supernet_rule, random_subnets=args.supernet_random,
                          max_first_epochs=args.supernet_max_first, train_settings=settings,
                          resolution=args.resolution, threads=args.threads,
                          command="bench_proxy_fidelity.py " + " ".join(sys.argv[1:]),
                          on_epoch=lambda e: print(f"supernet epoch {e['epoch']}/{e['epochs']}: "
                                                   f"{json.dumps(e)}", flush=True))
    print(f"supernet trained: {card['wall_s'] / 60:.1f} min", flush=True)
    return out


def run_supernet_jobs(configs, args, dataset: dict, results: Results, supernet: Path) -> None:
    """Per architecture: inherited-weight accuracy / loss with and without BN re-estimation."""
    from nas.evaluators import get_evaluator

    common = {"weights": str(supernet), "dataset": dataset, "resolution": args.resolution,
              "batch_size": args.supernet_bn_batch, "val_images": args.supernet_val_images or "all"}
    if args.supernet_keep_data_mb is not None:
        common["keep_data_mb"] = args.supernet_keep_data_mb
    with_bn = get_evaluator("supernet", dict(common, bn_recalibration_batches=args.supernet_bn_batches))
    inherited = get_evaluator("supernet", dict(common, bn_recalibration_batches=0))
    job = supernet_job(supernet, args)
    # load the supernet and the data (kept in memory unless --supernet-keep-data-mb 0) outside the timings
    for evaluator in (with_bn, inherited):
        evaluator.evaluate(configs[args.supernet_shard[0]], seed=0)
    epoch1 = get_evaluator("train", dict(args.train_settings, dataset=dataset, epochs=args.epochs,
                                         save_weights=False, resolution=args.resolution))
    shard, shards = args.supernet_shard
    for i, config in enumerate(configs):
        chash = config.config_hash()
        if i % shards != shard:   # another process scores it (--supernet-shard)
            continue
        if not results.get(chash, job):
            c0, k0 = time.process_time(), tree_cpu_s()
            a = with_bn.evaluate(config, seed=0)
            c1, k1 = time.process_time(), tree_cpu_s()
            b = inherited.evaluate(config, seed=0)
            row = {"accuracy": a["score"], "val_loss": a["val_loss"][-1], "wall_s": round(a["wall_s"], 3),
                   "cpu_s": round(c1 - c0, 3), "tree_cpu_s": round(k1 - k0, 3), "inherited_accuracy": b["score"],
                   "inherited_val_loss": b["val_loss"][-1], "inherited_wall_s": round(b["wall_s"], 3),
                   "hash": chash, "job": job}
            results.put(row)
            print(f"[{i + 1}/{len(configs)}] {chash[:10]} {job} {row['wall_s']:6.2f} s acc {row['accuracy']:.3f} "
                  f"loss {row['val_loss']:.3f} | inherited BN acc {row['inherited_accuracy']:.3f}", flush=True)
        name = epoch1_job(supernet, args)
        if i // shards < args.supernet_cost_archs and not results.get(chash, name):
            # the rung-1 epoch of the same architecture and its scoring, back to back (same load);
            # tree CPU adds the loader workers' (decoding) to this process's
            c0, k0, t0 = time.process_time(), tree_cpu_s(), time.perf_counter()
            with_bn.evaluate(config, seed=0)
            c1, k1, t1 = time.process_time(), tree_cpu_s(), time.perf_counter()
            epoch1.evaluate(config, budget_epochs=1, seed=args.seeds[0], workdir=str(supernet))
            c2, k2, t2 = time.process_time(), tree_cpu_s(), time.perf_counter()
            results.put({"hash": chash, "job": name, "wall_s": round(t2 - t1, 3), "cpu_s": round(c2 - c1, 3),
                         "tree_cpu_s": round(k2 - k1, 3), "score_wall_s": round(t1 - t0, 3),
                         "score_cpu_s": round(c1 - c0, 3), "score_tree_cpu_s": round(k1 - k0, 3),
                         "load": [round(v, 2) for v in os.getloadavg()]})
            print(f"[{i + 1}/{len(configs)}] {chash[:10]} {name} {time.perf_counter() - t0:6.2f} s", flush=True)


def supernet_job(supernet: Path, args=None) -> str:
    """The results key of the supernet rows. Scoring settings other than the first defaults (BN
    re-estimation on 4 x 64 images, the whole validation split) are part of it, so the rows
    earlier runs wrote keep their key (today's defaults, 4 x 32 and at most 300 validation images,
    read `:bn4x32:val300` on a folder data set)."""
    job = f"supernet:{Path(supernet).name}"
    if args is not None and (args.supernet_bn_batches, args.supernet_bn_batch) != (4, 64):
        job += f":bn{args.supernet_bn_batches}x{args.supernet_bn_batch}"
    if args is not None and args.supernet_val_images:
        job += f":val{args.supernet_val_images}"
    return job


def default_val_images(dataset: dict) -> int:
    """The `supernet` evaluator's default validation subset on this data set (0 = every image)."""
    from nas.evaluators import dataset as parse_dataset
    from nas.evaluators.supernet import _default_val_images

    return _default_val_images(parse_dataset("dataset", dataset)) or 0


def epoch1_job(supernet: Path, args) -> str:
    """The results key of a rung-1 epoch timed beside a scoring with these settings."""
    return f"epoch1/{args.seeds[0]}" + supernet_job(supernet, args)[len(supernet_job(supernet)):] + \
        (":streamed" if args.supernet_keep_data_mb == 0 else "")


def tree_cpu_s() -> float:
    """CPU seconds of this process and its children (loader workers), live and ended: what a
    scoring or an epoch costs with its decoding, which `time.process_time` alone leaves out."""
    import resource

    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = time.process_time() + ended.ru_utime + ended.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:   # ended meanwhile
            continue
        if int(fields[1]) == me:   # ppid; utime and stime follow at 11 and 12
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def supernet_rows(configs, args, results: Results, fixed) -> list[tuple]:
    """Correlation rows of the supernet signals (compared like the zero-cost ones: no seed)."""
    import numpy as np

    if not args.supernet_dir:
        return []
    job = supernet_job(args.supernet_dir, args)
    rows_by_hash = [results.get(c.config_hash(), job) for c in configs]
    if any(r is None for r in rows_by_hash):
        return []
    out = []
    for key, label in (("accuracy", "supernet accuracy, BN re-estimated"),
                       ("val_loss", "minus supernet validation loss, BN re-estimated"),
                       ("inherited_accuracy", "supernet accuracy, inherited BN statistics"),
                       ("inherited_val_loss", "minus supernet validation loss, inherited BN statistics")):
        sign = -1.0 if "loss" in key else 1.0
        out.append((f"{label} ({job})", *fixed([sign * r[key] for r in rows_by_hash])))
    return out


def supernet_summary(configs, args, results: Results) -> dict | None:
    """Cost per architecture against a rung-1 epoch; the supernet's training in
    architecture-trainings; where its ranking errs (mean |rank difference| by group)."""
    import numpy as np
    from scipy.stats import rankdata

    if not args.supernet_dir:
        return None
    job = supernet_job(args.supernet_dir, args)
    rows = [results.get(c.config_hash(), job) for c in configs]
    if any(r is None for r in rows):
        return None
    trains = [results.get(c.config_hash(), f"train/{s}") for c in configs for s in args.seeds]
    paired = [results.get(c.config_hash(), epoch1_job(args.supernet_dir, args)) for c in configs]
    paired = [e for e in paired if e and "score_cpu_s" in e]
    if paired:   # the rung-1 epoch timed right after a scoring of the same architecture (same load)
        epoch_s = float(np.median([e["wall_s"] for e in paired]))
        score_s = float(np.median([e["score_wall_s"] for e in paired]))
        cpu_ratio = float(np.median([e["cpu_s"] / e["score_cpu_s"] for e in paired]))
    else:   # imported trainings (--finals-from) carry no timings: NaN
        epoch_s = float(np.mean([t.get("wall_s", float("nan")) for t in trains])) / args.epochs
        score_s, cpu_ratio = float(np.median([r["wall_s"] for r in rows])), float("nan")
    full_s = epoch_s * args.epochs
    card = json.loads((Path(args.supernet_dir) / "card.json").read_text())
    mean_final = np.array([np.mean([results.get(c.config_hash(), f"train/{s}")["history"][-1]
                                    for s in args.seeds]) for c in configs])
    rank_error = np.abs(rankdata(-np.array([r["val_loss"] for r in rows])) - rankdata(mean_final))
    groups = {}
    for c, err in zip(configs, rank_error):
        for name, value in (("stage-1 width", c.widths[0]), ("region count", c.region_count),
                            ("Focus stage-3 depth", c.focus_depths[0]), ("Base stage-3 depth", c.base_depths[2])):
            groups.setdefault((name, value), []).append(float(err))
    return {"score_s": score_s, "inherited_score_s": float(np.median([r["inherited_wall_s"] for r in rows])),
            "epoch_s": epoch_s, "full_s": full_s, "speedup_vs_epoch": epoch_s / score_s,
            "cpu_speedup_vs_epoch": cpu_ratio, "paired": len(paired), "epochs": args.epochs, "n": len(configs),
            "supernet_wall_s": card["wall_s"], "supernet_epochs": card["epochs_done"],
            "training_equivalent": card["wall_s"] / full_s, "card": card,
            "training_equivalent_cpu": (card.get("cpu_s", float("nan")) / (args.epochs * float(np.median(
                [e["cpu_s"] for e in paired])))) if paired else float("nan"),
            "score_cpu_s": float(np.median([e["score_cpu_s"] for e in paired])) if paired else float("nan"),
            "epoch_cpu_s": float(np.median([e["cpu_s"] for e in paired])) if paired else float("nan"),
            **tree_cpu_summary(paired), "load": [e.get("load") for e in paired],
            "rank_error": {f"{k[0]} {k[1]}": (float(np.mean(v)), len(v)) for k, v in sorted(groups.items())}}


def tree_cpu_summary(paired: list[dict]) -> dict:
    """Medians of the scoring's and the epoch's CPU with their loader workers' (rows that have it)."""
    import numpy as np

    rows = [e for e in paired if "tree_cpu_s" in e]
    if not rows:
        return {}
    return {"score_tree_cpu_s": float(np.median([e["score_tree_cpu_s"] for e in rows])),
            "epoch_tree_cpu_s": float(np.median([e["tree_cpu_s"] for e in rows])),
            "tree_cpu_speedup_vs_epoch": float(np.median([e["tree_cpu_s"] / e["score_tree_cpu_s"] for e in rows]))}


def correlations(configs, args, results: Results) -> tuple[list[tuple], dict]:
    """Rows (signal, rho, tau, rho vs mean final) and summary numbers."""
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    hashes = [c.config_hash() for c in configs]
    s0, s1 = args.seeds[:2]
    final = {s: np.array([results.get(h, f"train/{s}")["history"][-1] for h in hashes]) for s in (s0, s1)}
    mean_final = (final[s0] + final[s1]) / 2

    def pair(signal_by_seed) -> tuple[float, float, float]:
        """Signal of seed a vs final of seed b (both orders averaged); and vs the mean final."""
        rhos, taus = [], []
        for a, b in ((s0, s1), (s1, s0)):
            x = signal_by_seed(a)
            rhos.append(spearmanr(x, final[b]).statistic)
            taus.append(kendalltau(x, final[b]).statistic)
        x_mean = (signal_by_seed(s0) + signal_by_seed(s1)) / 2
        return float(np.mean(rhos)), float(np.mean(taus)), float(spearmanr(x_mean, mean_final).statistic)

    def fixed(values) -> tuple[float, float, float]:
        x = np.array(values, dtype=float)
        rhos = [spearmanr(x, final[s]).statistic for s in (s0, s1)]
        taus = [kendalltau(x, final[s]).statistic for s in (s0, s1)]
        return float(np.mean(rhos)), float(np.mean(taus)), float(spearmanr(x, mean_final).statistic)

    rows = []
    ceiling = (float(spearmanr(final[s0], final[s1]).statistic),
               float(kendalltau(final[s0], final[s1]).statistic), float("nan"))
    rows.append(("seed-vs-seed agreement: final, seed A vs seed B", *ceiling))
    for r in args.rungs:
        if r < args.epochs:
            rows.append((f"rung {r} of {args.epochs} epochs (full-budget schedule)", *pair(
                lambda s, r=r: np.array([results.get(h, f"train/{s}")["history"][r - 1] for h in hashes]))))
    def have(key: str) -> bool:   # rows imported with --finals-from hold the accuracies only
        return all(key in results.get(h, f"train/{s}") for h in hashes for s in (s0, s1))

    for r in args.rungs:
        if r < args.epochs and have("train_loss"):
            rows.append((f"minus training loss of epoch {r} (full-budget schedule)", *pair(
                lambda s, r=r: -np.array([results.get(h, f"train/{s}")["train_loss"][r - 1] for h in hashes]))))
    for r in args.rungs:
        if r < args.epochs and have("val_loss"):
            rows.append((f"minus validation loss at rung {r} (full-budget schedule)", *pair(
                lambda s, r=r: -np.array([results.get(h, f"train/{s}")["val_loss"][r - 1] for h in hashes]))))
    for r in args.short_schedule:
        x = [results.get(h, f"short{r}/{args.seeds[0]}")["history"][-1] for h in hashes]
        other = final[s1]
        rows.append((f"{r}-epoch run, own schedule (seed {args.seeds[0]} vs seed {s1}'s final)",
                     float(spearmanr(x, other).statistic), float(kendalltau(x, other).statistic),
                     float(spearmanr(x, mean_final).statistic)))
    rows += supernet_rows(configs, args, results, fixed)
    for p in PROXIES:
        if all(results.get(h, p) for h in hashes):
            rows.append((p, *fixed([results.get(h, p)["score"] for h in hashes])))
    if all("flops" in (results.get(h, "cost") or {}) for h in hashes):
        rows.append(("params", *fixed([results.get(h, "cost")["params"] for h in hashes])))
        rows.append(("multiply-adds (fvcore convention)", *fixed([results.get(h, "cost")["flops"] for h in hashes])))
    summary = {"final_mean": float(mean_final.mean()), "final_min": float(mean_final.min()),
               "final_max": float(mean_final.max()),
               "seed_gap": float(np.abs(final[s0] - final[s1]).mean())}
    return rows, summary


def write_markdown(path: Path, rows, summary, args, dataset, command: str, load: str, wall: float,
                   configs, results: Results) -> None:
    lines = [
        "# Proxy fidelity: do cheap signals rank OverLoCK variants like full training? (issue 12)",
        "",
        f"Measured by `benchmarks/bench_proxy_fidelity.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "```", command, "```", "",
        f"- Space: `{args.space}`; {len(configs)} architectures sampled with seed {args.sample_seed}.",
        f"- Data set: `{json.dumps(dataset)}` at {args.resolution}x{args.resolution}.",
        f"- Full budget: {args.epochs} epochs, train evaluator defaults plus "
        f"`{json.dumps(args.train_settings)}`; seeds {args.seeds}; rungs {args.rungs}.",
        f"- Final accuracy over the architectures (mean of seeds): mean {summary['final_mean']:.3f}, "
        f"range {summary['final_min']:.3f}-{summary['final_max']:.3f}; mean |seed A - seed B| "
        f"{summary['seed_gap']:.3f}.",
        f"- Wall time {wall / 60:.1f} min on a shared 2-core CPU; load average at the start / end: {load}.",
        "",
        "A trained signal of one seed is compared with the other seed's final accuracy (both orders",
        "averaged), so shared training noise does not count as agreement; zero-cost signals with each",
        "seed's final. The last column compares with the mean final of both seeds.",
        "",
        "| signal | Spearman rho | Kendall tau | rho vs mean final |",
        "|---|---:|---:|---:|",
    ]
    for name, rho, tau, rho_mean in rows:
        mean_text = "" if rho_mean != rho_mean else f"{rho_mean:.2f}"
        lines.append(f"| {name} | {rho:.2f} | {tau:.2f} | {mean_text} |")
    lines += ["", "Published anchors (NAS-Bench-201, CIFAR-10): synflow rho 0.74-0.76, #params ~0.75 "
              "(Abdelfattah et al. 2021); reduced training (EcoNAS) 0.61.", "",
              "Per architecture (accuracy per epoch, seed A / seed B):", "",
              "| config | params | synflow | seed A | seed B |", "|---|---:|---:|---|---|"]
    s0, s1 = args.seeds[:2]
    for c in configs:
        h = c.config_hash()
        hist = lambda s: " ".join(f"{a:.3f}" for a in results.get(h, f"train/{s}")["history"])  # noqa: E731
        synflow = (results.get(h, "synflow") or {}).get("score")
        lines.append(f"| {c.summary().replace('|', '/')} | {(results.get(h, 'cost') or {}).get('params', '-')} | "
                     f"{'-' if synflow is None else format(synflow, '.3g')} | {hist(s0)} | {hist(s1)} |")
    lines += supernet_lines(summary.get("supernet"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def supernet_lines(sn: dict | None) -> list[str]:
    """The supernet's cost and where its ranking errs, as markdown."""
    if not sn:
        return []
    card = sn["card"]
    if math.isnan(sn["full_s"]):   # trainings imported with --finals-from carry no timings
        against = ("(the stand-alone trainings were imported with --finals-from: their time is not "
                   "known here)")
    else:
        against = (f"= {sn['training_equivalent']:.1f} stand-alone trainings of {sn['full_s']:.1f} s by wall time, "
                   f"{sn['training_equivalent_cpu']:.1f} by CPU time ({card.get('cpu_s', float('nan')) / 60:.1f} "
                   f"CPU-min against {sn['epochs']} x the median rung-1 epoch)")
    lines = ["", "Supernet (issue 19):", "",
             f"- Trained {sn['supernet_epochs']} epochs ({card['rule']} rule, {card['random_subnets']} random "
             f"sub-networks a step) in {sn['supernet_wall_s'] / 60:.1f} min {against}; load during training: "
             + "; ".join(f"{s['load_start']} -> {s.get('load_end')}" for s in card["sessions"]) + ".",
             f"- Scoring one architecture: {sn['score_s']:.2f} s median with BN re-estimation "
             f"({sn['score_cpu_s']:.2f} CPU-s against {sn['epoch_cpu_s']:.2f} for the epoch), "
             f"{sn['inherited_score_s']:.2f} s without; a rung-1 epoch takes {sn['epoch_s']:.2f} s: "
             f"{sn['speedup_vs_epoch']:.1f}x cheaper in wall time"
             + (f", {sn['cpu_speedup_vs_epoch']:.1f}x in CPU time (median over {sn['paired']} architectures "
                "timed back to back)." if sn["paired"] else " (rung-1 epoch = mean full training / epochs)."),
             *([f"- With the loader workers' CPU (decoding): {sn['score_tree_cpu_s']:.2f} CPU-s scoring against "
                f"{sn['epoch_tree_cpu_s']:.2f} for the epoch, {sn['tree_cpu_speedup_vs_epoch']:.1f}x (median of the "
                "per-architecture ratios); load average at each pair: "
                + ", ".join(f"{l[0]:.1f}" for l in sn["load"] if l) + "."] if "score_tree_cpu_s" in sn else []),
             "", "Where the supernet ranks badly: mean |rank by supernet loss (BN re-estimated) - rank by "
             f"mean final accuracy| ({sn['n']} architectures: 0 = same place, "
             f"{(sn['n'] ** 2 - 1) / (3 * sn['n']):.1f} = random order):", "",
             "| group | mean rank error | architectures |", "|---|---:|---:|"]
    for group, (err, n) in sn["rank_error"].items():
        lines.append(f"| {group} | {err:.1f} | {n} |")
    return lines


def main(argv=None) -> None:
    import torch
    import yaml

    import space as space_pkg

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="studies/spaces/quickstart.yaml")
    ap.add_argument("--dataset", default="digits",
                    help="'digits', 'photo-patches', 'photo-regions', 'mnist-5k' (nas.sample_sets) or a "
                         "dataset mapping (YAML)")
    ap.add_argument("--dataset-options", type=yaml.safe_load, default={},
                    help="keys added to the dataset mapping (YAML), e.g. '{train_size: 320}'")
    ap.add_argument("--n", type=int, default=20, help="architectures (>= 20 for a table)")
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=4, help="the full budget")
    ap.add_argument("--rungs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seeds", type=int, nargs=2, default=[0, 1])
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--train-settings", type=yaml.safe_load, default={},
                    help="extra train-evaluator settings (YAML mapping)")
    ap.add_argument("--proxy-batch", type=int, default=64)
    ap.add_argument("--short-schedule", type=int, nargs="*", default=[],
                    help="also train these epoch counts as their own budgets (seed A), e.g. 1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None, help="folder for results.jsonl (default: a temp dir)")
    ap.add_argument("--out", default=None, help="write the table here (markdown)")
    ap.add_argument("--supernet", default=None, help="score with this trained supernet folder")
    ap.add_argument("--supernet-epochs", type=int, default=0,
                    help="train a supernet for this many epochs under --work (resumable)")
    ap.add_argument("--supernet-rule", default="sandwich", choices=("sandwich", "max-first"))
    ap.add_argument("--supernet-random", type=int, default=2, help="random sub-networks a step")
    ap.add_argument("--supernet-max-first", type=int, default=0, help="max-first: epochs of the largest alone")
    ap.add_argument("--supernet-settings", type=yaml.safe_load, default={},
                    help="train settings of the supernet over --train-settings (YAML mapping)")
    ap.add_argument("--supernet-bn-batches", type=int, default=4, help="BN re-estimation batches")
    ap.add_argument("--supernet-bn-batch", type=int, default=32,
                    help="images a BN re-estimation batch (the evaluator's default; 64 before 2026-12-02)")
    ap.add_argument("--supernet-val-images", type=int, default=None,
                    help="validate on a fixed class-balanced subset of this many images; 0 = all "
                         "(default: the evaluator's, at most 300 for a folder data set)")
    ap.add_argument("--supernet-keep-data-mb", type=int, default=None,
                    help="the evaluator's keep_data_mb (default: its own; 0 = stream the images every scoring)")
    ap.add_argument("--finals-from", default=None,
                    help="markdown of an earlier run of the same command: import its per-architecture "
                         "accuracies instead of training them again (import_finals)")
    ap.add_argument("--supernet-cost-archs", type=int, default=20,
                    help="time a rung-1 epoch beside the scoring of the first K architectures")
    ap.add_argument("--supernet-shard", type=lambda t: tuple(int(v) for v in t.split("/")), default=(0, 1),
                    metavar="I/K", help="score only architectures i with i %% K == I (parallel processes)")
    ap.add_argument("--supernet-only", action="store_true",
                    help="only train / score the supernet (the stand-alone runs may be running elsewhere)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="proxy-fidelity-"))
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    dataset = resolve_dataset(args.dataset, work)
    dataset.update(args.dataset_options)
    if args.supernet_val_images is None:
        args.supernet_val_images = default_val_images(dataset)
    configs = sample_architectures(space_pkg.load_space(args.space), args.n, args.sample_seed)
    results = Results(work / "results.jsonl")
    print(f"{len(configs)} architectures; results in {work / 'results.jsonl'}", flush=True)
    if args.finals_from:
        print(f"imported {import_finals(Path(args.finals_from), configs, args, results)} trainings "
              f"from {args.finals_from}", flush=True)
    if not args.supernet_only:
        run_jobs(configs, args, dataset, results, work)
    args.supernet_dir = train_or_find_supernet(args, dataset, work)
    if args.supernet_dir:
        run_supernet_jobs(configs, args, dataset, results, args.supernet_dir)
    results = Results(work / "results.jsonl")   # re-read: other processes may have added rows
    if args.supernet_only and any(results.get(c.config_hash(), f"train/{s}") is None
                                  for c in configs for s in args.seeds):
        print("supernet scored; the stand-alone runs are not all done: no table yet", flush=True)
        return
    if args.supernet_dir and any(results.get(c.config_hash(), supernet_job(args.supernet_dir, args)) is None
                                 for c in configs):
        print("this shard is scored; the others are not all done: no table yet", flush=True)
        return
    rows, summary = correlations(configs, args, results)
    summary["supernet"] = supernet_summary(configs, args, results)
    wall = time.perf_counter() - t0
    load = f"{' '.join(f'{v:.2f}' for v in load_start)} / {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    print(f"\n{'signal':62s} {'rho':>6s} {'tau':>6s} {'rho(mean)':>9s}")
    for name, rho, tau, rho_mean in rows:
        print(f"{name:62s} {rho:6.2f} {tau:6.2f} {rho_mean:9.2f}")
    print(f"wall {wall / 60:.1f} min, load {load}")
    for line in supernet_lines(summary.get("supernet")):
        print(line)
    if args.out:
        command = "python " + " ".join(["benchmarks/bench_proxy_fidelity.py", *(
            a if " " not in a and "{" not in a else repr(a) for a in (argv or sys.argv[1:]))])
        write_markdown(Path(args.out), rows, summary, args, dataset, command, load, wall, configs, results)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
