"""The README's two commands install into a virtual environment, never into a system Python.

Before: scripts/quickstart.sh and scripts/test.sh ran `python3 -m pip install` into whatever
`python3` was; on Debian's and Ubuntu's own Python (PEP 668, `EXTERNALLY-MANAGED`) pip refuses,
so a newcomer's first command failed. Now both source scripts/python-env.sh: the active virtual
environment, else the project's `.venv`, created on the spot."""

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("quickstart.sh", "test.sh")


def _project(tmp_path: Path) -> Path:
    """A project folder holding the scripts (the helper is sourced from the project root)."""
    project = tmp_path / "project"
    shutil.copytree(REPO / "scripts", project / "scripts")
    return project


def _source_env(project: Path, env: dict) -> subprocess.CompletedProcess:
    script = 'source scripts/python-env.sh && echo "PY=$PY" && echo "PATH=$PATH" && env_usage'
    return subprocess.run(["bash", "-c", f"set -euo pipefail; {script}"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHON")}
    return {**env, **extra}


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_scripts_install_and_run_through_the_chosen_environment(name):
    text = (REPO / "scripts" / name).read_text()
    commands = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert "source scripts/python-env.sh" in commands
    bare = [c for c in commands if c.startswith(("python3 ", "python ", "pip ", "pip3 "))]
    assert not bare, f"{name} runs the system python: {bare}"
    assert any(c.startswith('"$PY" -m pip install') for c in commands)


def test_ci_runs_the_readme_test_command():
    assert "exec bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_venv_is_not_committed():
    out = subprocess.run(["git", "check-ignore", "-q", ".venv/bin/python"], cwd=REPO)
    assert out.returncode == 0


def test_an_active_virtual_environment_is_used_as_it_is(tmp_path):
    venv = tmp_path / "mine"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    project = _project(tmp_path)
    out = _source_env(project, _clean_env(VIRTUAL_ENV=str(venv)))
    assert out.returncode == 0, out.stderr
    assert f"PY={venv}/bin/python" in out.stdout
    assert f"PATH={venv}/bin:" in out.stdout
    assert "installing into the active virtual environment" in out.stdout
    assert not (project / ".venv").exists()


# ------------------------------------------------------------------------------ PEP 668
def _externally_managed_python(tmp_path: Path) -> Path:
    """A Python whose stdlib folder holds EXTERNALLY-MANAGED, as Debian's and Ubuntu's: this
    interpreter's binary with a stdlib of links to the real one, pip its only package."""
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_path("stdlib", vars={"base": sys.base_prefix,
                                                      "installed_base": sys.base_prefix}))
    root = tmp_path / "system-python"
    (root / "bin").mkdir(parents=True)
    lib = root / "lib" / version
    (lib / "site-packages").mkdir(parents=True)
    binary = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    shutil.copy2(binary, root / "bin" / version)
    (root / "bin" / "python3").symlink_to(version)
    for shared in (base / "lib").glob("libpython3*"):
        (root / "lib" / shared.name).symlink_to(shared)
    for entry in stdlib.iterdir():
        if entry.name not in ("site-packages", "dist-packages", "EXTERNALLY-MANAGED"):
            (lib / entry.name).symlink_to(entry)
    import pip

    pip_dir = Path(pip.__file__).parent
    (lib / "site-packages" / "pip").symlink_to(pip_dir)
    (lib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=managed by the system (test)\n")
    python = root / "bin" / "python3"
    probe = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or Path(probe.stdout.strip()) != lib:
        pytest.skip(f"cannot lay out a copy of this Python ({probe.stderr.strip()[-200:]})")
    return python


def _tiny_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, so the install needs no network."""
    name, version = "pep668_probe", "1.0"
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": b"ANSWER = 42\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for path, data in files.items()) + f"{dist}/RECORD,,\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in {**files, f"{dist}/RECORD": record.encode()}.items():
            zf.writestr(path, data)
    return wheel


@pytest.mark.slow
def test_on_an_externally_managed_python_the_project_venv_is_made_and_installed_into(tmp_path):
    python = _externally_managed_python(tmp_path)
    wheel = _tiny_wheel(tmp_path)
    install = ["-m", "pip", "install", "-q", "--no-index", str(wheel)]
    refused = subprocess.run([str(python), *install], capture_output=True, text=True)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr  # the old scripts' step
    project = _project(tmp_path)
    env = _clean_env(PATH=f"{python.parent}{os.pathsep}{os.environ['PATH']}")
    script = f'source scripts/python-env.sh && "$PY" {" ".join(install)} && env_usage && echo "PY=$PY"'
    out = subprocess.run(["bash", "-c", f"set -euo pipefail; {script}"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    venv_python = project / ".venv" / "bin" / "python"
    assert f"PY={venv_python}" in out.stdout
    assert f"creating {project / '.venv'} from {python.parent}" in out.stdout
    assert "run 'source .venv/bin/activate' first" in out.stdout
    imported = subprocess.run([str(venv_python), "-c", "import pep668_probe; print(pep668_probe.ANSWER)"],
                              capture_output=True, text=True)
    assert imported.stdout.strip() == "42", imported.stderr
    system = subprocess.run([str(python), "-c", "import pep668_probe"], capture_output=True, text=True)
    assert system.returncode != 0                                  # the system Python is untouched
    again = _source_env(project, env)                              # a second run reuses .venv
    assert again.returncode == 0 and "creating" not in again.stdout and f"PY={venv_python}" in again.stdout
