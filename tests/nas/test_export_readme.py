"""The README's "What you get" export commands, run in the order written, as a user would, on the
README's install (`pip install -e .`: no onnx) - issue 27. The study is written the way the other
export tests write one (`write_study`), at runs/quickstart; the supernet is a tiny one trained at
supernets/qs; each command runs in its own process with onnx unimportable."""

from __future__ import annotations

import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from test_export import write_study
from test_supernet_train import TINY_SPACE

ROOT = Path(__file__).resolve().parents[2]
NO_ONNX = "import sys; sys.modules['onnx'] = None; sys.modules['onnxscript'] = None\n"


def readme_export_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## What you get\s+```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no 'What you get' bash block"
    commands = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    return [c for c in commands if c[:2] == ["overlock-nas", "export"]]


def _space_configs(space_file: Path, n: int):
    from space import load_space

    space = load_space(space_file)
    return [space.sample(random.Random(i)) for i in range(n)]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """runs/quickstart (trials of the tiny space, all COMPLETE, untrained) and supernets/qs."""
    from nas.supernet.train import train_supernet

    home = tmp_path_factory.mktemp("user")
    (home / "tiny.yaml").write_text(TINY_SPACE)
    train_supernet(home / "tiny.yaml", {"kind": "procedural", "train_size": 16, "val_size": 16},
                   home / "supernets" / "qs", epochs=1, threads=1,
                   train_settings={"batch_size": 16, "eval_batch_size": 16, "bn_recalibration_batches": 1})
    configs = _space_configs(home / "tiny.yaml", 5)
    trials = [("COMPLETE", c.to_dict(), 0.5 + 0.08 * i, 1.0 + i, 1.0, False) for i, c in enumerate(configs)]
    write_study(home / "runs" / "quickstart", trials=trials, budgets={})
    sitecustomize = home / "no-onnx"
    sitecustomize.mkdir()
    (sitecustomize / "sitecustomize.py").write_text(NO_ONNX)
    return home


def _run(home: Path, argv: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(home / "no-onnx"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    code = "import sys; from nas.cli import main; sys.argv[0] = 'overlock-nas'; main()"
    return subprocess.run([sys.executable, "-c", code, *argv[1:]], cwd=home, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow   # six exports in four processes: about a minute on an idle 2-core machine
def test_the_readmes_export_commands_exit_0_in_order_without_onnx(user_dir):
    commands = readme_export_commands()
    assert len(commands) >= 4, commands
    for argv in commands:
        result = _run(user_dir, argv)
        shown = f"{shlex.join(argv)}\n{result.stdout}\n{result.stderr}"
        assert result.returncode == 0, shown
        assert "Traceback" not in result.stderr, shown
        skipped = [line for line in result.stderr.splitlines() if "model.onnx" in line and "skip" in line]
        assert skipped, shown
    exports = user_dir / "runs" / "quickstart" / "exports"
    assert exports.is_dir() and all((d / "config.json").is_file() for d in exports.iterdir())
    assert not any((d / "model.onnx").exists() for d in exports.iterdir())


def test_onnx_is_unimportable_in_those_processes(user_dir):
    """The guard itself: the processes above really ran without onnx."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(user_dir / "no-onnx"), str(ROOT)]))
    result = subprocess.run([sys.executable, "-c", "import onnx"], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "onnx" in result.stderr
