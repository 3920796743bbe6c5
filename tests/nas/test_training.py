"""The training recipe (nas/training.py): the same seed trains the same numbers as before the
recipe was one module, batch norm is re-estimated as exact averages, settings are checked once,
and the evaluators / supernet / training modules import each other without a cycle."""

from __future__ import annotations

import ast
import pathlib

import pytest
import torch

from nas.evaluators import get_evaluator
from nas.training import SCHEMA, Recipe, reestimate_bn
from overlock import OverLoCKConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMALL_DATA = {"kind": "procedural", "train_size": 48, "val_size": 24}

# What the code before the recipe moved to nas/training.py (commit 8b3dcee) trained with these
# seeds on this project's CPU build (torch 2.13, one thread); the refactor gave the same numbers
# to the last bit. Regenerate only for a deliberate change of the recipe.
BEFORE_TRAIN = {"history": [0.041666666666666664, 0.041666666666666664],
                "train_loss": [3.2314290205637612, 3.1798857847849527],
                "val_loss": [2.2896855672200522, 2.284879525502523]}
BEFORE_SUPERNET = [(3.236948251724243, 0.0, 0.0625, 2.3215, 0.125, 2.299),
                   (3.1782989501953125, 3.2270955244700112, 0.0625, 2.3311, 0.125, 2.2964)]


def _same(got, expected):
    # losses to 1e-6 relative: a CPU with other vector units may round differently
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_train_evaluator_trains_the_numbers_it_trained_before(tiny_config, tmp_path):
    ev = get_evaluator("train", {"epochs": 2, "batch_size": 16, "resolution": 32, "warmup_epochs": 0.5,
                                 "dataset": SMALL_DATA, "grad_clip": 1.0, "threads": 1})
    result = ev.evaluate(tiny_config, budget_epochs=None, device="cpu", seed=7, workdir=str(tmp_path))
    for key, expected in BEFORE_TRAIN.items():
        _same(result[key], expected)


def test_supernet_training_trains_the_numbers_it_trained_before(tmp_path):
    from nas.supernet.train import train_supernet
    from test_supernet_train import TINY_SPACE

    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    card = train_supernet(space, {"kind": "procedural", "train_size": 32, "val_size": 16}, tmp_path / "sn",
                          epochs=2, seed=0, rule="max-first", max_first_epochs=1, threads=1,
                          train_settings={"batch_size": 16, "eval_batch_size": 16,
                                          "bn_recalibration_batches": 1})
    keys = ("loss_max", "loss_kd", "max_accuracy", "max_val_loss", "min_accuracy", "min_val_loss")
    _same([e[k] for e in card["history"] for k in keys], [v for row in BEFORE_SUPERNET for v in row])


def test_reestimated_statistics_are_exact_averages_and_the_model_is_left_in_eval_mode():
    bn = torch.nn.BatchNorm2d(3, momentum=0.3)
    model = torch.nn.Sequential(bn).train()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 5, 5, generator=g) * 2 + 1, None) for _ in range(3)]
    assert reestimate_bn(model, batches) == 12
    images = torch.cat([x for x, _ in batches])
    torch.testing.assert_close(bn.running_mean, images.mean(dim=(0, 2, 3)))
    # the cumulative average of the batches' (unbiased) variances
    variances = torch.stack([x.var(dim=(0, 2, 3)) for x, _ in batches]).mean(0)
    torch.testing.assert_close(bn.running_var, variances)
    assert bn.momentum == 0.3 and not model.training and not bn.training


def test_zero_batches_keep_the_running_averages():
    bn = torch.nn.BatchNorm2d(3)
    bn.running_mean.fill_(5.0)
    recipe = Recipe.from_settings({"bn_recalibration_batches": 0})
    assert recipe.reestimate_bn(torch.nn.Sequential(bn), split=None, seed=0) == 0
    assert torch.all(bn.running_mean == 5.0)


def test_recipe_settings_are_the_train_evaluators():
    """One set of defaults and checks: the evaluator's recipe is the recipe of its settings."""
    ev = get_evaluator("train", {"lr": 3e-3, "aux_weight": 0.2, "epochs": 4})
    assert ev.recipe == Recipe.from_settings(ev.settings)
    assert ev.recipe.lr == 3e-3 and ev.recipe.aux_weight == 0.2
    assert Recipe.from_settings().settings() == {k: s.default for k, s in SCHEMA.items()}
    with pytest.raises(ValueError, match=r"^aux_weight=-1 must be a number >= 0"):
        Recipe.from_settings({"aux_weight": -1})


def test_aux_weight_weighs_the_aux_heads_loss():
    y = torch.tensor([0, 1])
    out = {"main": torch.tensor([[2.0, 0.0], [0.0, 1.0]]), "aux": torch.tensor([[0.0, 3.0], [1.0, 0.0]])}
    main = Recipe.from_settings({"aux_weight": 0}).loss(out, y)
    aux = Recipe.from_settings({"aux_weight": 0}).loss(out["aux"], y)
    torch.testing.assert_close(Recipe.from_settings({"aux_weight": 0.25}).loss(out, y), main + 0.25 * aux)


# ------------------------------------------------------------------------ no import cycle
def _module_names() -> dict[str, pathlib.Path]:
    out = {}
    for package in ("nas", "overlock", "space"):
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: pathlib.Path, modules) -> set[str]:
    """Modules `name` imports anywhere in its file (inside functions too): `from a.b import c` is
    an import of a.b.c when that is a module, else of a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycle_through_the_evaluators_supernet_and_training():
    modules = _module_names()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    mine = [m for m in modules if m.startswith(("nas.evaluators", "nas.supernet", "nas.training"))]
    for start in mine:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                assert nxt != start, "import cycle: " + " -> ".join(trail + [nxt])
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))


def test_the_recipe_and_supernet_training_import_no_evaluator():
    """docs/architecture.md: the evaluators build on the recipe, never the other way round."""
    modules = _module_names()
    for name in [m for m in modules if m == "nas.training" or m.startswith("nas.supernet")]:
        evaluators = sorted(m for m in _imports(name, modules[name], modules) if m.startswith("nas.evaluators"))
        assert not evaluators, f"{name} imports {evaluators}"
