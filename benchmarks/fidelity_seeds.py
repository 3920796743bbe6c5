"""Seed-robust ranking fidelity from a bench_proxy_fidelity work folder (issue 19).

bench_proxy_fidelity.py trains each architecture under two seeds and compares a signal with the
*other* seed's final accuracy; with finals that repeat across seeds at 0.3-0.6 that target is
noisy, and rows 0.05 apart are within noise of each other. Run the bench again on the same work
folder with other `--seeds` (trainings are keyed `train/SEED`, everything else is reused), then:

    python benchmarks/fidelity_seeds.py bench_out/proxy-fidelity/digits320 \\
        --space benchmarks/spaces/fidelity.yaml --n 20 --out table.md

With the k seeds whose trainings are complete, each signal is compared with the mean final
accuracy of the seeds it did not use:
  - a trained signal of seed s (a rung's accuracy or validation loss, a training loss) with the mean
    final of the other k-1 seeds, averaged over s;
  - a seed-free signal (the supernet's score, a zero-cost proxy, params) with the mean final of k-1
    seeds, averaged over the k choices of the seed left out, so both kinds face the same target.
It also prints how well the target repeats (seed vs seed, one half of the seeds vs the other),
and a paired bootstrap over architectures of the difference in rho between the supernet's
signals and the rung-1 validation loss (and params).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from fnmatch import fnmatch
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, rankdata

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

PROXIES = ("synflow", "naswot", "zico")   # bench_proxy_fidelity's zero-cost jobs
SUPERNET_FIELDS = (("val_loss", -1.0, "minus supernet validation loss, BN re-estimated"),
                   ("accuracy", 1.0, "supernet accuracy, BN re-estimated"),
                   ("inherited_val_loss", -1.0, "minus supernet validation loss, inherited BN statistics"),
                   ("inherited_accuracy", 1.0, "supernet accuracy, inherited BN statistics"))


@dataclass
class Signal:
    """One ranking signal over the architectures: per seed ({seed: values}) or seed-free (values)."""
    name: str
    values: dict | np.ndarray
    key: str = ""   # what the bootstrap comparisons look it up by

    @property
    def per_seed(self) -> bool:
        return isinstance(self.values, dict)


def load_rows(path: Path) -> dict:
    """results.jsonl as {(hash, job): row}; a later row of the same key wins, as in the bench."""
    if not path.exists():
        raise SystemExit(f"{path}: no such file (a bench_proxy_fidelity --work folder holds results.jsonl)")
    rows = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows[(row["hash"], row["job"])] = row
        except (ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{path}:{number}: not a results record with 'hash' and 'job' ({e})") from None
    return rows


def complete_seeds(rows: dict, hashes: list[str]) -> tuple[list[int], list[str]]:
    """Seeds with a training of every architecture, and a note for each seed left out."""
    counts: dict[int, int] = {}
    for chash, job in rows:
        if job.startswith("train/") and job[6:].isdigit() and chash in hashes:
            counts[int(job[6:])] = counts.get(int(job[6:]), 0) + 1
    seeds = sorted(s for s, n in counts.items() if n == len(hashes))
    notes = [f"seed {s}: {n} of {len(hashes)} architectures trained; left out"
             for s, n in sorted(counts.items()) if n < len(hashes)]
    return seeds, notes


def finals_of(rows: dict, hashes: list[str], seeds: list[int]) -> dict[int, np.ndarray]:
    return {s: np.array([rows[(h, f"train/{s}")]["history"][-1] for h in hashes], float) for s in seeds}


def trained_signals(rows: dict, hashes: list[str], seeds: list[int], rungs, loss_epochs) -> list[Signal]:
    """Per-seed signals from the stand-alone trainings' histories (rows imported with --finals-from
    hold accuracies only: a loss signal is left out unless every training has it)."""
    def per_seed(field: str, index: int, sign: float):
        if not all(len(rows[(h, f"train/{s}")].get(field) or []) > index for h in hashes for s in seeds):
            return None
        return {s: sign * np.array([rows[(h, f"train/{s}")][field][index] for h in hashes], float) for s in seeds}

    out = []
    for r in rungs:
        out.append(Signal(f"rung {r} accuracy", per_seed("history", r - 1, 1.0), f"rung{r}-accuracy"))
        out.append(Signal(f"minus validation loss at rung {r}", per_seed("val_loss", r - 1, -1.0), f"rung{r}-val-loss"))
    for e in loss_epochs:
        out.append(Signal(f"minus training loss of epoch {e}", per_seed("train_loss", e - 1, -1.0), f"epoch{e}-train-loss"))
    return [s for s in out if s.values is not None]


def seed_free_signals(rows: dict, hashes: list[str], jobs=None) -> list[Signal]:
    """Every supernet job with a row for each architecture (named by its job key; only those
    matching a pattern of `jobs` when given), the zero-cost proxies, params and multiply-adds."""
    def column(job: str, field: str, sign: float = 1.0):
        got = [rows.get((h, job)) for h in hashes]
        if any(r is None or r.get(field) is None for r in got):
            return None
        return sign * np.array([r[field] for r in got], float)

    out = []
    supernet_jobs = sorted({j for _, j in rows if j.startswith("supernet:")})
    for job in (j for j in supernet_jobs if not jobs or any(fnmatch(j, p) for p in jobs)):
        for field, sign, label in SUPERNET_FIELDS:
            out.append(Signal(f"{label} (`{job}`)", column(job, field, sign), f"{job}|{field}"))
    out += [Signal(p, column(p, "score"), p) for p in PROXIES]
    out.append(Signal("params", column("cost", "params"), "params"))
    out.append(Signal("multiply-adds (fvcore convention)", column("cost", "flops"), "flops"))
    return [s for s in out if s.values is not None]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rho (average ranks for ties); nan when either side is constant."""
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    return float(kendalltau(x, y).statistic)


def left_out_score(signal: Signal, finals: dict, stat=spearman, idx=None) -> float:
    """`stat` of the signal against the mean final of the seeds it did not use: a per-seed signal
    of seed s against the other seeds' mean, a seed-free one against each (k-1)-seed mean; the
    mean over s. `idx` picks (and may repeat) architectures, for the bootstrap."""
    idx = np.arange(len(next(iter(finals.values())))) if idx is None else idx
    scores = []
    for s in finals:
        target = np.mean([finals[t][idx] for t in finals if t != s], axis=0)
        x = signal.values[s] if signal.per_seed else signal.values
        scores.append(stat(x[idx], target))
    return nan_mean(scores)


def nan_mean(values) -> float:
    """Mean of the defined values; nan (without a warning) when none is, e.g. a constant signal."""
    values = np.array(values, float)
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")


def one_other_score(signal: Signal, finals: dict, stat=spearman) -> float:
    """`stat` against one other seed's final (the bench's comparison), over every seed pair."""
    if signal.per_seed:
        scores = [stat(signal.values[s], finals[t]) for s in finals for t in finals if t != s]
    else:
        scores = [stat(signal.values, finals[t]) for t in finals]
    return nan_mean(scores)


def resamples(n: int, count: int, seed: int):
    """Bootstrap index sets over n architectures (those with fewer than 5 distinct are skipped)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        idx = rng.integers(0, n, n)
        if len(set(idx.tolist())) >= 5:
            yield idx


def interval(values) -> tuple[float, float]:
    """The 90 % interval of the defined values (nan, nan when none is: a constant signal)."""
    values = np.array(values, float)
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    lo, hi = np.nanpercentile(values, [5, 95])
    return float(lo), float(hi)


def reliability(finals: dict, count: int, seed: int) -> list[tuple]:
    """How well the target repeats: (comparison, rho, tau, 90 % bootstrap interval of rho)."""
    seeds, n = list(finals), len(next(iter(finals.values())))
    mean_of = lambda group, idx: np.mean([finals[s][idx] for s in group], axis=0)  # noqa: E731
    # each pair while they are few (k <= 4: 6 pairs); their mean below in any case
    comparisons = [(f"seed {a} vs seed {b}", [a], [b]) for a, b in combinations(seeds, 2)] if len(seeds) <= 4 else []
    half = len(seeds) // 2
    if half >= 2:
        a, b = seeds[:half], seeds[half:2 * half]
        comparisons.append((f"mean of seeds {a} vs mean of {b}", a, b))
    out, all_idx = [], np.arange(n)
    if len(seeds) > 2:
        pairs = [spearman(finals[a], finals[b]) for a, b in combinations(seeds, 2)]
        out.append((f"seed vs seed, mean over the {len(pairs)} pairs (min {min(pairs):.2f}, max {max(pairs):.2f})",
                    float(np.mean(pairs)), float(np.mean([kendall(finals[a], finals[b])
                                                          for a, b in combinations(seeds, 2)])),
                    (float("nan"),) * 2))
    for label, a, b in comparisons:
        boot = [spearman(mean_of(a, idx), mean_of(b, idx)) for idx in resamples(n, count, seed)]
        out.append((label, spearman(mean_of(a, all_idx), mean_of(b, all_idx)),
                    kendall(mean_of(a, all_idx), mean_of(b, all_idx)), interval(boot)))
    own = Signal("own final", dict(finals))
    out.append((f"one seed's final vs the mean of the other {len(seeds) - 1} (mean over the {len(seeds)})",
                left_out_score(own, finals), left_out_score(own, finals, kendall), (float("nan"),) * 2))
    return out


def comparisons_of(signals: list[Signal]) -> list[tuple[Signal, Signal]]:
    """The bootstrap pairs: each supernet job's loss and accuracy against the rung-1 validation
    loss and against params (what the supernet adds over size)."""
    by_key = {s.key: s for s in signals}
    rung1, params, pairs = by_key.get("rung1-val-loss"), by_key.get("params"), []
    for s in signals:
        if s.key.startswith("supernet:") and s.key.split("|")[1] in ("val_loss", "accuracy"):
            if rung1 is not None:
                pairs.append((s, rung1))
            if params is not None:
                pairs.append((s, params))
    return pairs


def paired_bootstrap(pairs, finals: dict, count: int, seed: int) -> list[tuple]:
    """(a, b, point difference, 90 % interval, P(diff >= 0), resamples) of left-out rho a - b,
    both on the same resampled architectures."""
    n = len(next(iter(finals.values())))
    needed = {s.key: s for pair in pairs for s in pair}
    boot: dict[str, list[float]] = {k: [] for k in needed}
    for idx in resamples(n, count, seed):
        for key, signal in needed.items():
            boot[key].append(left_out_score(signal, finals, idx=idx))
    out = []
    for a, b in pairs:
        diff = np.array(boot[a.key]) - np.array(boot[b.key])
        diff = diff[np.isfinite(diff)]
        out.append((a, b, left_out_score(a, finals) - left_out_score(b, finals), interval(diff),
                    float(np.mean(diff >= 0)) if len(diff) else float("nan"), len(diff)))
    return out


def markdown(work: Path, seeds, n: int, table, reliable, boot, notes, count: int) -> str:
    k = len(seeds)
    lines = [f"Seed-robust fidelity of `{work}`: {n} architectures, seeds {seeds} (k = {k}); target = the mean "
             f"final accuracy of the {k - 1} seeds a signal did not use (`benchmarks/fidelity_seeds.py`).", ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    lines += [f"| signal | kind | Spearman rho vs mean of the other {k - 1} | Kendall tau | rho vs one other seed |",
              "|---|---|---:|---:|---:|"]
    for name, kind, rho, tau, one in table:
        lines.append(f"| {name} | {kind} | {rho:.2f} | {tau:.2f} | {one:.2f} |")
    lines += ["", f"How well the target repeats (90 % bootstrap over the {n} architectures, {count} resamples):", "",
              "| comparison | Spearman rho | Kendall tau | 90 % interval of rho |", "|---|---:|---:|---|"]
    for label, rho, tau, (lo, hi) in reliable:
        span = "" if lo != lo else f"{lo:.2f} to {hi:.2f}"
        lines.append(f"| {label} | {rho:.2f} | {tau:.2f} | {span} |")
    if boot:
        lines += ["", f"Paired bootstrap over architectures ({count} resamples, the same resample for both "
                  "signals): difference of left-out Spearman rho.", "",
                  "| signal A | signal B | rho A - rho B | 90 % interval | P(A - B >= 0) |", "|---|---|---:|---|---:|"]
        for a, b, point, (lo, hi), p, _ in boot:
            lines.append(f"| {a.name} | {b.name} | {point:+.2f} | {lo:+.2f} to {hi:+.2f} | {p:.2f} |")
    return "\n".join(lines) + "\n"


def analyse(work: Path, hashes: list[str], seeds=None, rungs=(1, 2), loss_epochs=(1,), count=2000,
            boot_seed=0, jobs=None) -> str:
    """The whole report for a work folder whose architectures hash to `hashes`."""
    rows = load_rows(work / "results.jsonl")
    found, notes = complete_seeds(rows, hashes)
    if seeds:
        missing = [s for s in seeds if s not in found]
        if missing:
            raise SystemExit(f"--seeds {missing}: not trained for every architecture in {work / 'results.jsonl'}")
        found = list(seeds)
    if len(found) < 2:
        raise SystemExit(f"{work / 'results.jsonl'}: {len(found)} seed(s) with every architecture trained; "
                         "at least 2 needed")
    finals = finals_of(rows, hashes, found)
    signals = trained_signals(rows, hashes, found, rungs, loss_epochs) + seed_free_signals(rows, hashes, jobs)
    table = [(s.name, "per seed" if s.per_seed else "seed-free", left_out_score(s, finals),
              left_out_score(s, finals, kendall), one_other_score(s, finals)) for s in signals]
    reliable = reliability(finals, count, boot_seed)
    boot = paired_bootstrap(comparisons_of(signals), finals, count, boot_seed)
    return markdown(work, found, len(hashes), table, reliable, boot, notes, count)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", help="a bench_proxy_fidelity --work folder (its results.jsonl)")
    ap.add_argument("--space", default="benchmarks/spaces/fidelity.yaml", help="the bench's --space")
    ap.add_argument("--n", type=int, default=20, help="the bench's --n")
    ap.add_argument("--sample-seed", type=int, default=0, help="the bench's --sample-seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="training seeds to use (default: every seed trained for all architectures)")
    ap.add_argument("--rungs", type=int, nargs="+", default=[1, 2], help="epochs whose accuracy / val loss rank")
    ap.add_argument("--train-loss-epochs", type=int, nargs="*", default=[1])
    ap.add_argument("--bootstrap", type=int, default=2000, help="resamples of the architectures")
    ap.add_argument("--bootstrap-seed", type=int, default=0)
    ap.add_argument("--supernet-jobs", nargs="+", default=None, metavar="PATTERN",
                    help="only these supernet results keys (shell patterns, e.g. 'supernet:*:bn4x32'); default: all")
    ap.add_argument("--out", default=None, help="also write the markdown here")
    args = ap.parse_args(argv)

    import space as space_pkg
    from bench_proxy_fidelity import sample_architectures

    configs = sample_architectures(space_pkg.load_space(args.space), args.n, args.sample_seed)
    text = analyse(Path(args.work), [c.config_hash() for c in configs], args.seeds, args.rungs,
                   args.train_loss_epochs, args.bootstrap, args.bootstrap_seed, args.supernet_jobs)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
