"""Measurements a latency model spares in a study, for the same front (issue 13, "in a study").

    python benchmarks/bench_latency_study.py [--trials 60] [--budget-ms B]
    python benchmarks/bench_latency_study.py --space benchmarks/spaces/latency.yaml --sampler default

Two studies of a space (default: the quickstart's, 72 architectures, 64x64; `--sampler random`,
seed 0, `trials_count: sampled`, so with the random sampler both draw the same configs):
accuracy from the scripted test evaluator (a score that grows with the network, no training)
and FLOPs as objectives, under a latency budget. Latency is
really measured on this CPU by the measuring worker (`measure_latency`: deploy model, batch 8 -
at batch 1 these small networks are overhead-bound and their latencies span only 6-11 ms - fp32,
1 thread, 3 warm-up + 10 timed forwards). Study A measures every new config; study B has
`latency: {model: auto}`: once the device store holds 10 measurements at these settings it fits a
latency model (nas.latency_model), refits it after every measurement, rejects draws predicted
over the budget by more than the model's stated margin without measuring them, and measures a draw
the model cannot place within the budget before it becomes a trial (`latency.measure_first`).

Reported: measurements each study made, trials over the budget (issue 17's goal: <= 5 % with a
model), draws rejected per reason, wrong skips - B's rejections on the model's word measured
afterwards in this process (`--check-skips`, those predicted closest to the budget first), and
with A's measurement where A measured the config - and the feasible Pareto fronts.
Each study starts from an empty latency store (`OVERLOCK_NAS_CACHE`). The budget defaults to the
measured latency of the architecture at the first third of the space's MACs.
Measurement noise on a loaded host can move a config near the budget across it between the two
studies; such configs are listed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(REPO / "tests" / "nas")]
LATENCY = {"threads": 1, "warmup": 3, "repeats": 10, "batch": 8}


def default_budget(space_file: Path) -> float:
    """The latency of the space's architecture at the first third of its MACs, measured here:
    about two thirds of the space is over it, many of them far over."""
    import space
    from nas.measure import measure_latency

    configs = sorted(space.load_space(space_file).enumerate(), key=lambda c: space.complexity(c).flops)
    third = configs[len(configs) // 3]
    return round(measure_latency(third, threads=1, warmup=LATENCY["warmup"], batch=LATENCY["batch"],
                                 repeats=LATENCY["repeats"])["latency_ms"], 3)


def run(label: str, model: bool, args, budget: float) -> dict:
    import optuna

    from nas.engine import SearchEngine, open_storage
    from nas.study import parse_study

    work = Path(tempfile.mkdtemp(prefix=f"bench-latstudy-{label}-"))
    os.environ["OVERLOCK_NAS_CACHE"] = str(work / "cache")
    latency = dict(LATENCY, recheck_near=args.recheck_near, **({"model": "auto"} if model else {}))
    data = {"name": "bench-latency-study", "space": str(args.space),
            "objectives": ["accuracy", "flops"], "constraints": {"latency_ms": budget},
            "evaluator": {"name": "fake_evaluators:Scripted", "sleep_s": 0.0},
            **({} if args.sampler == "default" else {"sampler": {"name": args.sampler}}),
            "seed": args.seed, "trials": args.trials,
            "trials_count": "sampled", "parallel": 2, "resources": {"cpus": 1},
            "latency": latency, "fvcore_check_every": 0, "output_dir": str(work / "run")}
    spec = parse_study(data, label=label)
    t0 = time.monotonic()
    engine = SearchEngine(spec, num_cpus=3)
    engine.run()
    wall = time.monotonic() - t0
    rejections = engine.proposals.proposer.pricer.latency_rejections if engine.proposals else {}
    from nas.latency_store import LatencyCache
    from nas.storage import LATENCY_RECORD_NAME

    readings = len(LatencyCache(str(work / "run" / LATENCY_RECORD_NAME)).entries())
    study = optuna.load_study(study_name=spec.name, storage=open_storage(spec, work / "run"))
    trials = study.trials
    own = [t for t in trials if t.user_attrs.get("reused_from") is None]
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        # architectures, not trials: a reused duplicate of a front config is the same point
        front = sorted({t.user_attrs["config_hash"] for t in study.best_trials})
    return {"label": label, "work": str(work), "wall_s": round(wall, 1), "trials": len(trials),
            "readings": readings,        # every config measured, trials' and draws' alike
            "skipped_by_model": {h: (ms, config.to_dict()) for h, (why, ms, config) in rejections.items()
                                 if why == "latency_predicted"},
            "measured": {t.user_attrs["config_hash"]: t.user_attrs["latency_ms"] for t in own
                         if t.user_attrs.get("latency_source") == "measured"},
            "predicted": {t.user_attrs["config_hash"]: t.user_attrs["latency_predicted_ms"] for t in own
                          if t.user_attrs.get("latency_source") == "predicted"},
            "pairs": [(t.user_attrs["latency_predicted_ms"], t.user_attrs["latency_ms"]) for t in own
                      if "latency_predicted_ms" in t.user_attrs and "latency_ms" in t.user_attrs],
            "remeasured": {t.user_attrs["config_hash"]: (t.user_attrs["latency_first_ms"], t.user_attrs["latency_ms"],
                                                         t.user_attrs.get("latency_recheck", ""))
                           for t in own if "latency_first_ms" in t.user_attrs},
            "margin": [t.user_attrs.get("latency_model_margin") for t in own][-1] if own else None,
            "model_n": max((t.user_attrs.get("latency_model_n", 0) for t in own), default=0),
            "front": front,
            # issue 17's goal: trials (not draws) over the latency budget, and the draws the model
            # rejected before they became trials
            "over_budget": sum(1 for t in own if t.user_attrs.get("latency_source") == "measured"
                               and t.user_attrs["latency_ms"] > budget),
            "own_trials": len(own),
            "rejected": dict(engine.proposals.rejected) if engine.proposals else _rejected(own)}


def _rejected(trials) -> dict:
    """Draws rejected before they became trials, summed per reason over `trials`."""
    out: dict = {}
    for t in trials:
        for reason, count in (t.user_attrs.get("rejected_draws") or {}).items():
            out[reason] = out.get(reason, 0) + count
    return out


def check_skips(skipped: dict, budget: float, n: int) -> list[tuple[str, float, float]]:
    """(hash, predicted, measured ms) of up to `n` configs the model rejected, the ones predicted
    closest to the budget first, measured here as the measuring worker measures."""
    from nas.measure import measure_latency
    from overlock import OverLoCKConfig

    out = []
    for h, (predicted, config) in sorted(skipped.items(), key=lambda kv: kv[1][0])[:n]:
        ms = measure_latency(OverLoCKConfig.from_dict(config), threads=LATENCY["threads"],
                             warmup=LATENCY["warmup"], batch=LATENCY["batch"],
                             repeats=LATENCY["repeats"])["latency_ms"]
        out.append((h, round(predicted, 3), round(ms, 3)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--space", type=Path, default=REPO / "studies/spaces/quickstart.yaml")
    ap.add_argument("--sampler", default="random",
                    help="a sampler name, or `default` (no `sampler` key: the study default)")
    ap.add_argument("--seed", type=int, default=0, help="the studies' seed")
    ap.add_argument("--check-skips", type=int, default=30,
                    help="B's model rejections measured afterwards (closest to the budget first)")
    ap.add_argument("--budget-ms", type=float, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--recheck-near", type=float, default=0.0,
                    help="latency.recheck_near for both studies (0: off, the default)")
    args = ap.parse_args()
    load = os.getloadavg()
    budget = args.budget_ms or default_budget(args.space)
    print(f"# {args.space.name} ({args.sampler} sampler, seed {args.seed}), {args.trials} sampled trials, "
          f"latency budget {budget} ms "
          f"(batch 8, fp32, 1 thread, 64x64); load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    a = run("A-measure-all", False, args, budget)
    b = run("B-model-auto", True, args, budget)
    wrong = sorted(h for h in set(b["predicted"]) | set(b["skipped_by_model"])
                   if h in a["measured"] and a["measured"][h] <= budget)
    checked = check_skips(b["skipped_by_model"], budget, args.check_skips)
    wrong_checked = [c for c in checked if c[2] <= budget]
    flipped = sorted(h for h in set(a["measured"]) & set(b["measured"])
                     if (a["measured"][h] <= budget) != (b["measured"][h] <= budget))
    within = [abs(p / m - 1) <= 0.10 for p, m in b["pairs"]]
    both = sorted(set(a["measured"]) & set(b["measured"]))
    diff = sorted(abs(b["measured"][h] / a["measured"][h] - 1) for h in both)
    rows = [("configs measured (trials and draws)", a["readings"], b["readings"]),
            ("trials measured", len(a["measured"]), len(b["measured"])),
            ("skipped as predicted over budget", len(a["predicted"]) + len(a["skipped_by_model"]),
             len(b["predicted"]) + len(b["skipped_by_model"])),
            ("trials measured over the budget / trials", f"{a['over_budget']} / {a['own_trials']}",
             f"{b['over_budget']} / {b['own_trials']}"),
            ("draws rejected before becoming trials", a["rejected"] or 0, b["rejected"] or 0),
            ("wrong skips (A measured it within budget)", "-", len(wrong)),
            (f"wrong skips among {len(checked)} measured afterwards (closest first)", "-",
             len(wrong_checked)),
            ("feasible Pareto front (configs)", len(a["front"]), len(b["front"])),
            ("fronts identical", "", a["front"] == b["front"]),
            ("wall s", a["wall_s"], b["wall_s"])]
    print("| | A: measure all | B: model auto |\n|---|---|---|")
    for name, x, y in rows:
        print(f"| {name} | {x} | {y} |")
    print(f"# B's model at the end: fitted on {b['model_n']} measurements, stated margin "
          f"{b['margin']}; predicted vs measured on B's measured trials: "
          f"{sum(within)}/{len(within)} within 10 %")
    for study in (a, b):
        if study["remeasured"]:
            again = study["remeasured"].values()
            over = sum(first > budget >= kept for first, kept, _ in again)
            model = sum(why.startswith(("+", "-")) for _, _, why in again)
            print(f"# {study['label']} measured {len(again)} config(s) again ({model} contradicted by "
                  f"the model, {len(again) - model} near the budget; first -> kept ms: "
                  f"{', '.join(f'{f:.2f} -> {k:.2f}' for f, k, _ in again)}); "
                  f"{over} of them over the budget at first, within it after")
    if checked:
        print(f"# B's skips measured afterwards (predicted -> measured ms, budget {budget}): "
              + ", ".join(f"{p:.2f} -> {m:.2f}" for _, p, m in checked[:12])
              + (" ..." if len(checked) > 12 else ""))
    if diff:
        print(f"# the {len(diff)} configs both measured (separate processes): median difference "
              f"{100 * diff[len(diff) // 2]:.1f} %, largest {100 * diff[-1]:.1f} %, "
              f"{sum(d <= 0.05 for d in diff)}/{len(diff)} within 5 %")
    if flipped:
        print(f"# measured on both sides of the budget by A and B (noise): {flipped}")
    if a["front"] != b["front"]:
        print(f"# front A only: {sorted(set(a['front']) - set(b['front']))}; "
              f"B only: {sorted(set(b['front']) - set(a['front']))}")
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({"budget_ms": budget, "A": a, "B": b, "wrong_skips": wrong,
                                         "checked_skips": checked, "flipped": flipped}, indent=1))


if __name__ == "__main__":
    main()
