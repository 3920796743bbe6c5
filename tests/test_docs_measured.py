"""Docs say what was measured: their sentences are checked against their own tables, and the
commands they quote against the benchmark they quote (issue 18, part 5)."""

import math
import re
import shlex
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _section(text: str, start: str, end: str | None = None) -> str:
    body = text[text.index(start):]
    return body[:body.index(end)] if end else body


def _table(text: str, after: str) -> dict[str, list[str]]:
    """{first cell: other cells} of the first markdown table after the line containing `after`."""
    lines = text[text.index(after):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _rate(cell: str) -> float:
    return float(cell.split("/")[0].replace(",", "").strip())


# ------------------------------------------------------------------------------- docs/data.md
def test_data_memory_and_speed_sentences_match_their_tables():
    """Before: "rose by the same amount" for +16.4 and +39.1 MiB, and "the decode is 6x faster"
    where only one loader was 6x faster."""
    text = (DOCS / "data.md").read_text()
    idle = _table(text, "**Re-measured on the otherwise idle machine**")
    loaded = _table(text, "Under load, session 2:")
    names = {"plain": ("plain DataLoader (Pillow decode + resize in `__getitem__`), N", "plain DataLoader, 4N"),
             "stream": ("stream, N", "stream, 4N")}
    prose = " ".join(_section(text, "Private memory per streaming worker 4N / N", "Under load, session 2:").split())
    assert "same amount" not in prose
    for loader, (n, n4) in names.items():
        grew = float(idle[n4][3]) - float(idle[n][3])       # Pss_Anon, N -> 4N
        assert f"+{grew:.1f} MiB for the {loader}" in prose, (loader, grew)
    speedups = []
    for idle_row, loaded_row in zip(idle.values(), loaded.values()):
        speedups.append(_rate(idle_row[1]) / _rate(loaded_row[1]))
    stated = [float(x) for x in re.findall(r"(\d+\.\d)x", _section(prose, "by a factor that differs", "The load"))]
    order = [0, 3, 1, 4, 2, 5]      # plain N, 4N, stream N, 4N, cache N, 4N as the sentence names them
    assert stated == [round(speedups[i], 1) for i in order]
    assert "6x faster" not in prose


# --------------------------------------------------------------------- docs/proxy-fidelity.md
def test_seed_agreement_is_not_called_a_ceiling_and_its_limit_is_stated():
    """Before: "the noise ceiling", which the page's own rung-1 validation loss (0.73, 0.77)
    exceeds. Seed-vs-seed agreement r limits a signal's expected rho against one seed's final
    to about sqrt(r) (a final = true score + seed noise), not to r."""
    text = (DOCS / "proxy-fidelity.md").read_text()
    flat = " ".join(text.split())
    assert "noise ceiling" not in flat and "at best match" not in flat
    agreements = [float(m) for m in re.findall(r"\| seed-vs-seed agreement: final, seed A vs seed B \| ([0-9.]+) \|", text)]
    assert len(agreements) == 3
    for r in agreements:
        assert f"sqrt({r:.2f}) = {math.sqrt(r):.2f}" in flat, r
    assert "not a bound" in flat


def test_no_page_or_benchmark_calls_seed_agreement_a_ceiling():
    """The benchmark prints the row the pages quote; the supernet page quotes it too."""
    for path in (DOCS / "supernet.md", BENCHMARKS / "bench_proxy_fidelity.py"):
        assert "noise ceiling" not in " ".join(path.read_text().split()), path


# ----------------------------------------------------------------------------- docs/gpu.md §3
def _bench_flags(name: str) -> set[str]:
    return set(re.findall(r'add_argument\("(--[a-z-]+)"', (BENCHMARKS / name).read_text()))


def _commands(section: str, script: str) -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = [line.split("#")[0] for block in blocks for line in block.splitlines() if script in line]
    return [shlex.split(line.split("&&")[-1]) for line in lines]


def test_gpu_utilisation_table_columns_come_from_the_quoted_commands():
    """Before: the bare `bench_utilization.py` quoted in §3 produces two of the table's four
    measured columns (not the 0.5 s stand-in, not the store run), and the figures were not
    labelled as CPU figures on a page about GPUs."""
    text = (DOCS / "gpu.md").read_text()
    section = _section(text, "## 3. The latency device", "## 4.")
    assert "CPU figures" in " ".join(section.split())
    flags = _bench_flags("bench_utilization.py")
    default_runs = re.search(r'add_argument\("--runs", default="([a-z,]+)"\)',
                             (BENCHMARKS / "bench_utilization.py").read_text()).group(1)
    produced = set()
    for argv in _commands(section, "bench_utilization.py"):
        options = dict(zip(argv[2::2], argv[3::2])) if len(argv) > 2 else {}
        assert set(options) <= flags, f"{argv}: flags the benchmark lacks"
        sleep = options.get("--latency-sleep")
        for kind in options.get("--runs", default_runs).split(","):
            produced.add({"none": "no latency", "store": "store already holds the latencies",
                          "budget": f"budget, {float(sleep):g} s stand-in measurement" if sleep
                          else "latency as a budget"}[kind])
    header = next(line for line in section.splitlines() if line.startswith("| engine |"))
    columns = [c.strip() for c in header.strip().strip("|").split("|")][1:]
    assert set(columns) <= produced, f"columns no quoted command produces: {set(columns) - produced}"
