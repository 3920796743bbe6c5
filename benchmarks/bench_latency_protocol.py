"""Which latency protocol is repeatable on a loaded CPU (issue 13): clocks x statistics x pinning.

    python benchmarks/bench_latency_protocol.py                       # 16 xt_t configs at 128, 1 thread
    python benchmarks/bench_latency_protocol.py --configs 8 --rounds 4 --per 3

Two worker processes run one after the other (separate processes, different moments of the
machine's load). Each builds the same `--configs` deploy models (seeded sample of the space), then
for `--rounds` rounds visits every config in turn (rounds interleaved across configs) and times
`--per` forwards twice: once with the thread pinned to one core, once free. Every forward is
timed by the wall clock (`perf_counter`) and by the thread's CPU time (`thread_time`). Offline,
each protocol (pinned or free, clock, statistic, rounds x forwards used) gives one latency per
config and process; the table is the share of configs whose two processes agree within +-10 %
(and +-5 %), best first. `nas.measure.measure_latency` implements the winner.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def _worker(a) -> None:
    import torch

    import space
    from overlock import OverLoCK

    torch.set_num_threads(1)
    s = space.load_space(a.space)
    configs = [s.sample(seed=1000 + i).replace(resolution=(a.resolution, a.resolution))
               for i in range(a.configs)]
    everything, pinned = os.sched_getaffinity(0), {max(os.sched_getaffinity(0))}
    models = []
    for c in configs:
        torch.manual_seed(0)
        models.append(OverLoCK(c, deploy=True).eval())
    x = torch.randn(1, 3, a.resolution, a.resolution)
    rec = [{m: {"wall": [], "cpu": []} for m in ("pin", "free")} for _ in configs]
    with torch.inference_mode():
        for m in models:
            for _ in range(a.warmup):
                m(x)
        for r in range(a.rounds):
            for i, m in enumerate(models):
                for mode in (("pin", "free") if (r + i) % 2 == 0 else ("free", "pin")):
                    os.sched_setaffinity(0, pinned if mode == "pin" else everything)
                    m(x)   # one untimed forward after switching
                    wall, cpu = [], []
                    for _ in range(a.per):
                        t0, c0 = time.perf_counter(), time.thread_time()
                        m(x)
                        cpu.append((time.thread_time() - c0) * 1e3)
                        wall.append((time.perf_counter() - t0) * 1e3)
                    rec[i][mode]["wall"].append(wall)
                    rec[i][mode]["cpu"].append(cpu)
    json.dump({"records": rec, "load": os.getloadavg()}, open(a.worker_out, "w"))


STATISTICS = {
    "median": lambda rounds: np.median(np.concatenate(rounds)),
    "min": lambda rounds: np.min(np.concatenate(rounds)),
    "p10": lambda rounds: np.percentile(np.concatenate(rounds), 10),
    "p25": lambda rounds: np.percentile(np.concatenate(rounds), 25),
    "lowest round median": lambda rounds: min(np.median(r) for r in rounds),
    "median of round minima": lambda rounds: np.median([min(r) for r in rounds]),
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="studies/spaces/xt_t.yaml")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--configs", type=int, default=16)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--per", type=int, default=6, help="timed forwards per round and mode")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=40, help="rows printed")
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker_out:
        return _worker(a)
    loads, runs = [os.getloadavg()], []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(2):
            out = os.path.join(tmp, f"run{k}.json")
            subprocess.run([sys.executable, os.path.abspath(__file__), "--worker-out", out, "--space", a.space,
                            "--resolution", str(a.resolution), "--configs", str(a.configs),
                            "--rounds", str(a.rounds), "--per", str(a.per), "--warmup", str(a.warmup)],
                           check=True)
            runs.append(json.load(open(out)))
            loads.append(os.getloadavg())
    rows = []
    for mode, clock, (name, stat) in itertools.product(("free", "pin"), ("wall", "cpu"), STATISTICS.items()):
        for rounds, per in sorted({(a.rounds, a.per), (a.rounds, max(1, a.per // 2)), (max(1, a.rounds // 2), a.per)}):
            def value(run, i):
                return stat([r[:per] for r in run["records"][i][mode][clock][:rounds]])
            va = np.array([value(runs[0], i) for i in range(a.configs)])
            vb = np.array([value(runs[1], i) for i in range(a.configs)])
            rel = np.abs(vb / va - 1)
            rows.append((np.mean(rel <= .1), np.mean(rel <= .05), np.median(rel), mode, clock, name,
                         rounds, per))
    print(f"{a.configs} configs of {a.space} at {a.resolution}x{a.resolution}, 1 thread; two processes; "
          f"load average {' / '.join(' '.join(f'{v:.2f}' for v in l) for l in loads)} "
          f"(before, after run 1, after run 2); {time.monotonic() - t0:.0f} s\n")
    print("| pinned | clock | statistic | rounds x forwards | within +-10 % | within +-5 % | median difference |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (-r[0], -r[1], r[2]))[:a.top]:
        print(f"| {'yes' if r[3] == 'pin' else 'no'} | {'thread CPU' if r[4] == 'cpu' else 'wall'} | {r[5]} | "
              f"{r[6]} x {r[7]} | {100 * r[0]:.0f} % | {100 * r[1]:.0f} % | {100 * r[2]:.1f} % |")


if __name__ == "__main__":
    main()
