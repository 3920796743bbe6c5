"""A newcomer's first hour, timed: a fresh clone, the README's quickstart command (which installs
into a new .venv), then every command of the README's "What you get" block in the order written,
in that environment (the README's install: no test extra, no onnx).

    python benchmarks/newcomer_walk.py                      # clone HEAD of this repository
    python benchmarks/newcomer_walk.py --results benchmarks/results/newcomer.jsonl

Prints each step's exit status, wall time and load average, and appends one JSON line per step to
`--results`. Run it alone: every step is a timing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands(readme: Path) -> list[str]:
    block = re.search(r"## What you get\s+```bash\n(.*?)```", readme.read_text(), re.S)
    if not block:
        raise SystemExit(f"{readme}: no 'What you get' bash block")
    return [line for line in block.group(1).splitlines() if line.strip()]


def step(name: str, shell: str, cwd: Path, env: dict, log: Path) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(["bash", "-c", shell], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    seconds = round(time.perf_counter() - t0, 1)
    row = {"step": name, "rc": rc, "seconds": seconds, "load": f"{load:.2f}-{os.getloadavg()[0]:.2f}",
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    print(f"rc={rc} {seconds:7.1f} s  load {row['load']}  {name}", flush=True)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=None, help="append one JSON line per step here")
    args = ap.parse_args(argv)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    home = Path(tempfile.mkdtemp(prefix="newcomer-"))
    clone = home / "overlock-nas"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    print(f"newcomer walk of {commit} in {clone}, {os.cpu_count()} CPUs", flush=True)
    rows = [step("bash scripts/quickstart.sh", "bash scripts/quickstart.sh", clone, env, home / "0.log")]
    env["PATH"] = f"{clone / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(clone / ".venv")
    for i, line in enumerate(readme_commands(clone / "README.md"), start=1):
        rows.append(step(line.split("#")[0].strip(), line, clone, env, home / f"{i}.log"))
    failed = [r["step"] for r in rows if r["rc"] != 0]
    print(f"{len(rows) - len(failed)} of {len(rows)} steps exited 0; logs in {home}", flush=True)
    if args.results:
        with open(args.results, "a") as fh:
            for r in rows:
                fh.write(json.dumps({**r, "commit": commit, "cpus": os.cpu_count(),
                                     "command": "python benchmarks/newcomer_walk.py"}) + "\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
