"""Where an export lands, and that it lands whole.

An export is written into a temporary directory beside its target (`stage_dir`), verified there
(`verify`: every requested file written, each matching the sha256 config.json records, every check
passed), and only then put in place (`publish`): the target is renamed aside, the new directory
renamed in, the old one removed. A failed export therefore publishes nothing, and `--overwrite`
leaves the earlier export in place until the new one is complete.

An existing target is replaced only with `overwrite=True`, only when export wrote it (its
config.json says so) and it holds no file export did not write; a directory holding a study
(study.log, driver.lock, weights/, ...) is never replaced (`check_out_dir`). Without
`overwrite`, an earlier export of the same trial whose content the new one repeats is kept as it
is (`differences` is empty): writing the same export twice is not an error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from overlock import hub
from nas import storage
from nas.selection import ExportError
from nas.storage import one_line as _one_line

__all__ = ["WRITTEN_BY", "PROGRAM_FLAGS", "check_out_dir", "files_not_written_by_export",
           "written_by_export", "stage_dir", "verify", "differences", "publish"]

WRITTEN_BY = "overlock-nas export"   # config.json marker: a directory export may replace
PROGRAM_FLAGS = {hub.PROGRAM_FILE: "--no-pt2", hub.ONNX_FILE: "--no-onnx"}   # the flag that skips each
# files whose tensors say what the model is, compared tensor by tensor (safetensors writes its
# metadata in no fixed order, so equal weights need not be equal bytes); programs are compared
# by presence (their bytes hold exporter details that differ between runs of the same model)
CONTENT_FILES = (hub.WEIGHTS_FILE, hub.DEPLOY_WEIGHTS_FILE)


def check_out_dir(out: Path, overwrite: bool, *, same: tuple | None = None) -> dict | None:
    """Refuse (ExportError) an `out` that exists unless it is empty, or `overwrite` is given and
    export wrote it (its config.json carries `written_by`, or - before that marker - export's
    `source` and `checks`) and it holds nothing export did not write (those are named: replacing
    would delete them). A directory holding a study, or one found below it, is never replaced.

    Without `overwrite`, an earlier export that records `same` = (study name, trial number,
    config hash) is not refused yet: its config.json is returned, and the caller keeps it when
    the new export has the same content (`differences`), else refuses. None otherwise."""
    out = Path(out)
    if not out.exists():
        return None
    if not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory; choose another --out")
    study = storage.holds_study(out)
    if study is not None:
        raise ExportError(f"--out {out} holds a study ({study}); export never writes into or "
                          "replaces a run directory: choose another --out")
    if not any(out.iterdir()):
        return None
    earlier = written_by_export(out)
    if earlier is None:
        raise ExportError(f"--out {out} exists and was not written by overlock-nas export (no export "
                          "config.json): choose another --out; --overwrite replaces only an earlier export")
    foreign = files_not_written_by_export(out)
    if not overwrite:
        if same is not None and _records(earlier) == tuple(same) and not foreign:
            return earlier
        raise ExportError(f"{out} already exists (an earlier export{_of(earlier)}); choose another "
                          "--out or pass --overwrite")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 5 else "")
        raise ExportError(f"--out {out} is an earlier export, but holds files export did not write "
                          f"({shown}); --overwrite would delete them: move them out or choose another --out")
    return None


def _records(meta: dict) -> tuple:
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    return (source.get("study"), source.get("trial"), meta.get("config_hash"))


def _of(meta: dict) -> str:
    trial = _records(meta)[1]
    return f" of trial {trial}" if trial is not None else ""


def files_not_written_by_export(out: Path) -> list[str]:
    """Entries of the export directory `out` that export did not write (sorted names): anything
    but config.json, the card, the weights, the programs (model.onnx and its external data) and
    the files config.json records."""
    try:
        recorded = set(json.loads((Path(out) / hub.CONFIG_FILE).read_text()).get("files") or {})
    except (OSError, ValueError, AttributeError):
        recorded = set()
    ours = recorded | {hub.CONFIG_FILE, hub.CARD_FILE, hub.WEIGHTS_FILE, hub.DEPLOY_WEIGHTS_FILE,
                       hub.PROGRAM_FILE}
    return sorted(p.name for p in Path(out).iterdir()
                  if not (p.is_file() and (p.name in ours or p.name.startswith(hub.ONNX_FILE))))


def written_by_export(path: Path) -> dict | None:
    """config.json of `path` when export wrote it, else None."""
    try:
        meta = json.loads((Path(path) / hub.CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    ours = meta.get("written_by") == WRITTEN_BY or (isinstance(meta.get("source"), dict)
                                                    and isinstance(meta.get("checks"), list))
    return meta if ours else None


def stage_dir(out: Path) -> Path:
    """A new private directory beside `out` to write the export into (ExportError: one line)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise ExportError(f"--out {out}: cannot write there ({_one_line(e)})") from None


def verify(staged: Path, out: Path, required: list[str]) -> dict:
    """The staged export's config.json, once every check it records passed and every file it
    records - `required` among them - is on disk with its recorded size and sha256. ExportError
    (one line, naming the file or check and the flag that skips a program) otherwise."""
    meta = written_by_export(staged) or {}
    for check in meta.get("checks", []):
        name = next((f for f in PROGRAM_FLAGS if f in check["check"]), None)
        skip = f"; pass {PROGRAM_FLAGS[name]} to export without it" if name else ""
        if "error" in check:
            raise ExportError(f"{out}: {name or check['check']} could not be written: {check['error']}; "
                              f"nothing was written{skip}")
        if not check["passed"]:
            raise ExportError(f"{out}: {check['check']}: max abs diff {check['max_abs_diff']:.3g} exceeds "
                              f"{check['tolerance']:g}; nothing was written{skip}")
    files = meta.get("files") or {}
    for name in required:
        if name not in files and not (staged / name).is_file():
            raise ExportError(f"{out}: {name} was not written; nothing was written")
    for name, record in files.items():
        path = staged / name
        if not path.is_file() or hub.file_record(path) != record:
            raise ExportError(f"{out}: {name} does not match the size and sha256 config.json records; "
                              "nothing was written")
    return meta


def differences(new: Path, earlier: Path) -> list[str]:
    """What differs between the staged export `new` and the earlier export `earlier` of the same
    trial: the files present, the weights' bytes, the weights' source, a latency measurement.
    Empty: the same model, the same files (the earlier one is kept as it is)."""
    new_meta, old_meta = written_by_export(new) or {}, written_by_export(earlier) or {}
    out = []
    names_new, names_old = set(new_meta.get("files") or {}), set(old_meta.get("files") or {})
    if names_new != names_old:
        out.append("files: " + ", ".join(sorted(names_new ^ names_old)))
    for name in CONTENT_FILES:
        if name in names_new and not _same_tensors(new / name, earlier / name):
            out.append(name)
    for key in ("weights", "latency_export"):
        if _kind(new_meta.get(key)) != _kind(old_meta.get(key)):
            out.append(key)
    return out


def _same_tensors(a: Path, b: Path) -> bool:
    """The two safetensors files hold the same tensors and metadata (False if one is unreadable)."""
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
            if fa.metadata() != fb.metadata() or set(fa.keys()) != set(fb.keys()):
                return False
            return all(torch.equal(fa.get_tensor(k), fb.get_tensor(k)) for k in fa.keys())
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return False


def _kind(value):
    return value.get("source", True) if isinstance(value, dict) else value is not None


def publish(staged: Path, out: Path, log) -> None:
    """Put the verified `staged` directory at `out`: an existing `out` (already checked by
    `check_out_dir`) is renamed aside, `staged` renamed in, the old one removed; if the second
    rename fails the old one is put back."""
    _publish_permissions(staged)
    try:
        if not out.exists():
            staged.rename(out)
            return
        names = sorted(p.name for p in out.iterdir())
        if names:
            log(f"replacing the earlier export {out} ({', '.join(names)})")
        backup = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(backup)
        try:
            staged.rename(out)
        except OSError:
            backup.rename(out)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    except OSError as e:
        raise ExportError(f"--out {out}: cannot put the export there ({_one_line(e)}); nothing was "
                          "replaced") from None


def _publish_permissions(path: Path) -> None:
    """mkdtemp makes a private (0700) directory; give the result the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    for f in path.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)
