"""`overlock-nas space FILE.yaml`: what a space holds, what it costs, what fits the budgets."""

from __future__ import annotations

import json

import click
import yaml


def _budgets(path: str, extra: tuple[str, ...]) -> dict:
    """Budgets of a study file (if FILE is one) plus `--budget name=value` options."""
    from nas.study import parse_amount

    budgets = {}
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    if isinstance(raw, dict) and "space" in raw and "objectives" in raw:
        from nas.study import load_study_file

        budgets.update(load_study_file(path).constraints)
    for item in extra:
        name, _, value = item.partition("=")
        try:
            budgets[name.strip()] = parse_amount(value)
        except ValueError as e:
            raise click.UsageError(f"--budget {item}: {e}") from None
    return budgets


@click.command("space")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--budget", "budget", multiple=True, metavar="NAME=VALUE",
              help="Extra budget, e.g. flops=2e9 or params=20M (adds to a study file's constraints).")
@click.option("--samples", default=2000, show_default=True,
              help="Samples for the cost range / feasible-fraction estimate of large spaces.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of tables.")
def command(file, budget, samples, as_json):
    """Show a space (or a study file's space): dimensions, size, cost range, feasible fraction
    under the budgets, and where the official presets sit."""
    import space

    try:
        s = space.load_space(file)
        budgets = _budgets(file, budget)
    except (space.SpaceError, ValueError) as e:
        raise click.ClickException(" ".join(str(e).split())) from None
    doc, resolution = _document(s, file, budgets, samples)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        _print(doc, s, resolution)


def _document(s, file: str, budgets: dict, samples: int) -> tuple[dict, tuple]:
    """What `space` shows, as the JSON document `--json` prints; and the space's input size."""
    import random

    import space

    resolution = s.base.replace(**{k: v for k, v in s.fixed.items() if k == "resolution"}).resolution
    size = s.size()
    rng = random.Random(0)
    configs = list(s.enumerate()) if size is not None and size <= samples else \
        [s.sample(rng) for _ in range(samples)]
    costs = [space.complexity(c) for c in configs]
    priced = space.feasibility.priced_budgets(budgets)
    fraction = space.feasible_fraction(s, priced, max_enumerate=samples, samples=samples) \
        if priced else None

    def span(values, scale):
        return (min(values) / scale, max(values) / scale)

    doc = {
        "space": s.name, "file": file, "size": size,
        "dimensions": [{"name": n, "values": d} for n, d in s.describe()],
        "cost_range": {
            "basis": "exact (all configs)" if len(configs) == size else f"{len(configs)} samples",
            "gmacs": span([c.flops for c in costs], 1e9),
            "gmacs_paper": span([c.flops_paper for c in costs], 1e9),
            "params_m": span([c.params_inference for c in costs], 1e6),
            "memory_mb": span([c.memory_mb for c in costs], 1),
            "label": space.macs_label(resolution),
        },
        "budgets": budgets,
        "feasible_fraction": None if fraction is None else {
            "fraction": fraction.fraction, "exact": fraction.exact, "evaluated": fraction.evaluated,
            "ci95": list(fraction.ci95), "text": fraction.describe()},
        "presets": _presets(s, resolution, priced),
    }
    return doc, resolution


def _presets(s, resolution, priced: dict) -> list[dict]:
    """Where each official preset sits: in the space or not, its cost, within the budgets."""
    import overlock
    import space

    presets = []
    for name, cfg in overlock.PRESETS.items():
        c = space.complexity(cfg, resolution=resolution)
        ok = all(v <= 0 for v in space.violations(cfg, priced).values()) if priced else None
        presets.append({"preset": name, "in_space": s.contains(cfg.replace(
            **{k: v for k, v in s.fixed.items() if k in ("resolution", "num_classes")})),
            "gmacs": c.flops / 1e9, "gmacs_paper": c.flops_paper / 1e9,
            "params_m": c.params_inference / 1e6, "within_budgets": ok})
    return presets


def _print(doc: dict, s, resolution) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    size, budgets, label = doc["size"], doc["budgets"], doc["cost_range"]["label"]
    console.print(f"[bold]Space[/bold] {s.name}  ({doc['file']})")
    console.print(f"Size: {size if size is not None else 'continuous (infinite)'} points")
    t = Table("dimension", "values", title="Dimensions", title_justify="left")
    for name, desc in s.describe():
        t.add_row(name, desc)
    console.print(t)
    r = doc["cost_range"]
    console.print(f"Cost range ({r['basis']}), at {resolution[0]}x{resolution[1]}, batch 1:")
    console.print(f"  {label}: {r['gmacs'][0]:.3f} .. {r['gmacs'][1]:.3f}")
    console.print(f"  GMACs (paper convention): {r['gmacs_paper'][0]:.3f} .. {r['gmacs_paper'][1]:.3f}")
    console.print(f"  Params (deploy, no aux head), M: {r['params_m'][0]:.2f} .. {r['params_m'][1]:.2f}")
    console.print(f"  Peak activation memory (fp32, est.), MiB: {r['memory_mb'][0]:.1f} .. "
                  f"{r['memory_mb'][1]:.1f}")
    if budgets:
        import space

        priced = space.feasibility.priced_budgets(budgets)
        console.print("Budgets: " + ", ".join(f"{k} <= {v:g}" for k, v in budgets.items()))
        unpriced = sorted(set(budgets) - set(priced))
        if doc["feasible_fraction"] is not None:
            console.print(f"Feasible fraction under {', '.join(priced)}: {doc['feasible_fraction']['text']}")
        if unpriced:
            console.print(f"  ({', '.join(unpriced)} is measured per trial, not priced here)")
    t = Table("preset", "in space", "GMACs fvcore", "GMACs paper", "params M", "in budgets",
              title=f"Official presets ({label}; paper = the authors' convention)",
              title_justify="left")
    for p in doc["presets"]:
        t.add_row(p["preset"], "yes" if p["in_space"] else "no", f"{p['gmacs']:.3f}",
                  f"{p['gmacs_paper']:.3f}", f"{p['params_m']:.2f}",
                  "-" if p["within_budgets"] is None else ("yes" if p["within_budgets"] else "no"))
    console.print(t)
