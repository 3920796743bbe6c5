"""Exported model directories: the on-disk format, its writer primitives and its loader.

A model directory (written by `overlock-nas export`) holds:

    config.json                the architecture (`OverLoCKConfig.to_dict()`) and its hash, where it
                               came from (study, trial, metrics), the files and their sha256, and the
                               export-time checks
    model.safetensors          weights of the train structure (fine-tunable; aux head included)
    model_reparam.safetensors  weights of the re-parameterised deploy structure
    model.pt2                  `torch.export` program of the deploy model (needs `import overlock`)
    model.onnx                 ONNX program of the deploy model (aggregation op decomposed)
    README.md                  the model card

    >>> import overlock
    >>> model = overlock.create_model("exports/trial-12").eval()        # train structure
    >>> deploy = overlock.create_model("exports/trial-12", deploy=True)  # re-parameterised

Loading reads safetensors only and never unpickles. Every inconsistency (a missing or edited
config, a hash that does not match, a truncated or corrupt weights file, weights of another
variant, a shape mismatch) raises `ConfigError` with one line naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .config import ConfigError, OverLoCKConfig
from .model import OverLoCK

__all__ = ["FORMAT", "FORMAT_VERSION", "CONFIG_FILE", "WEIGHTS_FILE", "DEPLOY_WEIGHTS_FILE",
           "PROGRAM_FILE", "ONNX_FILE", "CARD_FILE", "read_model_dir", "load_model_dir",
           "load_program", "load_state", "save_model_dir", "write_config", "save_weights",
           "file_record", "weights_state"]

FORMAT = "overlock-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DEPLOY_WEIGHTS_FILE = "model_reparam.safetensors"
PROGRAM_FILE = "model.pt2"
ONNX_FILE = "model.onnx"
CARD_FILE = "README.md"
STRUCTURES = {WEIGHTS_FILE: "train", DEPLOY_WEIGHTS_FILE: "deploy"}

# config fields a loaded model may change: they leave every weight shape alone, or only touch the
# classifiers, which are then freshly initialised (fine-tuning on a new label set)
OVERRIDABLE = ("num_classes", "resolution", "aux_head")
_MODEL_KWARGS = ("drop_path_rate", "use_checkpoint", "ls_init_value")


# ------------------------------------------------------------------------------- writing
def weights_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous CPU tensors that safetensors can store."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: OverLoCK, path: str | os.PathLike) -> None:
    """Write `model`'s weights as safetensors, tagged with its config hash and structure."""
    from safetensors.torch import save_file

    structure = "deploy" if model.deployed else "train"
    save_file(weights_state(model), str(path),
              metadata={"format": FORMAT, "config_hash": model.config.config_hash(),
                        "structure": structure})


def file_record(path: str | os.PathLike) -> dict:
    """{"bytes", "sha256"} of a file, as stored under config.json's `files`."""
    return {"bytes": os.path.getsize(path), "sha256": _sha256(path)}


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_model_dir(model: OverLoCK, path: str | os.PathLike,
                   metadata: Mapping[str, Any] | None = None) -> dict:
    """Write `model` as a model directory that `create_model(path)` loads (no programs, no card).

    A train-structure model gives `model.safetensors` and, re-parameterised on a copy,
    `model_reparam.safetensors`; a deployed model gives only the latter. `metadata` entries are
    added to config.json (provenance, metrics). Returns the config.json data.

        >>> overlock.hub.save_model_dir(finetuned_model, "finetuned/")
    """
    import copy

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    config = model.config
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_dict(),
            "config_hash": config.config_hash(), "architecture_hash": config.architecture_hash(),
            "summary": config.summary()}
    meta.update({k: v for k, v in (metadata or {}).items() if k not in meta})
    files = {}
    if not model.deployed:
        save_weights(model, root / WEIGHTS_FILE)
        files[WEIGHTS_FILE] = file_record(root / WEIGHTS_FILE)
        deploy = copy.deepcopy(model).reparam()
    else:
        deploy = model
        (root / WEIGHTS_FILE).unlink(missing_ok=True)   # never leave train weights of another model
    save_weights(deploy, root / DEPLOY_WEIGHTS_FILE)
    files[DEPLOY_WEIGHTS_FILE] = file_record(root / DEPLOY_WEIGHTS_FILE)
    meta["files"] = {**(meta.get("files") or {}), **files}
    write_config(root, meta)
    return meta


def write_config(path: str | os.PathLike, meta: Mapping[str, Any]) -> None:
    """Write config.json (the `config` entry as a dict) atomically."""
    data = dict(meta)
    if isinstance(data.get("config"), OverLoCKConfig):
        data["config"] = data["config"].to_dict()
    where = Path(path) / CONFIG_FILE
    tmp = where.with_name(f".{CONFIG_FILE}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, where)


# ------------------------------------------------------------------------------- reading
def read_model_dir(path: str | os.PathLike) -> dict:
    """Parse and validate `config.json` of a model directory.

    Returns the parsed dict with `config` replaced by the validated `OverLoCKConfig`.

    Raises:
        ConfigError: not a model directory, invalid JSON, unknown format, invalid config, or a
            `config_hash` that does not match the config (one line naming the file).
    """
    root = Path(path)
    where = root / CONFIG_FILE
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory")
    if not where.is_file():
        raise ConfigError(f"{where}: missing (not a model directory written by overlock-nas export)")
    try:
        meta = json.loads(where.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: unreadable ({e})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{where}: must hold a JSON object, not {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{where}: format={meta.get('format')!r}, expected {FORMAT!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ConfigError(f"{where}: format_version={version!r} is not supported "
                          f"(this overlock reads 1..{FORMAT_VERSION})")
    if "config" not in meta:
        raise ConfigError(f"{where}: no 'config' entry")
    try:
        config = OverLoCKConfig.from_dict(meta["config"])
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{where}: config: {e}") from None
    stored = meta.get("config_hash")
    if stored is None:
        raise ConfigError(f"{where}: no 'config_hash' entry (cannot verify the config)")
    if stored != config.config_hash():
        raise ConfigError(f"{where}: config_hash={stored!r} does not match the config "
                          f"(its hash is {config.config_hash()!r}); the config was edited or the "
                          "file is not the exported one")
    meta["config"] = config
    return meta


def _check_record(path: Path, record: Mapping[str, Any] | None) -> None:
    """Size and sha256 of a file against its config.json record (skipped when unrecorded)."""
    if record is None:
        return
    size = path.stat().st_size
    if size != record.get("bytes"):
        raise ConfigError(f"{path}: {size} bytes, config.json records {record.get('bytes')} "
                          "(truncated or replaced)")
    if _sha256(path) != record.get("sha256"):
        raise ConfigError(f"{path}: sha256 does not match config.json (corrupt or replaced)")


def _read_weights(root: Path, name: str, meta: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of one weights file, after checking size, sha256 and the safetensors tags."""
    from safetensors import SafetensorError, safe_open

    path = root / name
    if not path.is_file():
        raise ConfigError(f"{path}: missing")
    _check_record(path, (meta.get("files") or {}).get(name))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tags = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        message = " ".join(str(e).split())
        raise ConfigError(f"{path}: not a readable safetensors file ({message})") from None
    config_hash = meta["config"].config_hash()
    if tags.get("config_hash") not in (None, config_hash):
        raise ConfigError(f"{path}: weights of config {tags['config_hash']!r}, but config.json "
                          f"describes {config_hash!r} (another variant's weights)")
    expected = STRUCTURES[name]
    if tags.get("structure") not in (None, expected):
        raise ConfigError(f"{path}: holds {tags['structure']} weights, expected {expected}")
    return tensors


def _classifier_prefixes(model: OverLoCK) -> tuple[str, ...]:
    prefixes = [f"head.{len(model.head) - 1}."]
    if hasattr(model, "aux_head"):
        prefixes.append(f"aux_head.{len(model.aux_head) - 1}.")
    return tuple(prefixes)


def load_state(model: OverLoCK, tensors: dict[str, torch.Tensor], path: str | os.PathLike,
               lenient_prefixes: tuple[str, ...] = (), lenient_missing: tuple[str, ...] = ()) -> None:
    """Copy `tensors` (read from `path`) into `model`; a missing, surplus or mis-shaped weight
    raises `ConfigError`, one line naming the file and the first offending key.

    Keys under `lenient_prefixes` whose shape differs are skipped (classifier re-initialised for a
    new `num_classes`); keys under `lenient_missing` may be absent or surplus (aux head toggled).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in tensors and not k.startswith(lenient_missing)]
    unexpected = [k for k in tensors if k not in own and not k.startswith(lenient_missing)]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ConfigError(f"{path}: lacks weight {missing[0]!r}{more} the config needs "
                          "(weights of another architecture?)")
    if unexpected:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        raise ConfigError(f"{path}: has weight {unexpected[0]!r}{more} the config does not build")
    state = {}
    for key, value in tensors.items():
        if key not in own:
            continue
        if tuple(value.shape) != tuple(own[key].shape):
            if key.startswith(lenient_prefixes):
                continue
            raise ConfigError(f"{path}: shape mismatch for {key!r}: file {tuple(value.shape)}, "
                              f"config builds {tuple(own[key].shape)}")
        if value.dtype != own[key].dtype and not (value.is_floating_point() and own[key].is_floating_point()):
            raise ConfigError(f"{path}: dtype mismatch for {key!r}: file {value.dtype}, "
                              f"model {own[key].dtype}")
        state[key] = value
    model.load_state_dict(state, strict=False)


def load_model_dir(path: str | os.PathLike, deploy: bool | None = None, **kwargs: Any) -> OverLoCK:
    """Build the model stored in an exported model directory.

    Args:
        path: the directory (`config.json` + weights).
        deploy: False: train structure from `model.safetensors` (fine-tunable); True: the
            re-parameterised structure from `model_reparam.safetensors` (re-parameterised from
            the train weights when only those exist). Default: the train structure when its
            weights are present, else the deploy structure.
        **kwargs: `num_classes` (a new classifier, freshly initialised, for fine-tuning),
            `resolution`, `aux_head` (dropping or adding the auxiliary classifier), and the model
            options `drop_path_rate`, `use_checkpoint`, `ls_init_value`. Other config fields are
            fixed by the weights and refused.

    Returns:
        The model (in training mode, like every `create_model` result; call `.eval()`).

    Raises:
        ConfigError: one line naming the file and the problem.
    """
    root = Path(path)
    meta = read_model_dir(root)
    config: OverLoCKConfig = meta["config"]
    model_kwargs = {k: kwargs.pop(k) for k in _MODEL_KWARGS if k in kwargs and kwargs[k] is not None}
    overrides = {k: v for k, v in kwargs.items() if v is not None}
    refused = sorted(k for k in overrides if k not in OVERRIDABLE)
    if refused:
        raise ConfigError(f"{root}: cannot override {refused[0]!r} of an exported model (its weights "
                          f"fix the architecture; overridable: {', '.join(OVERRIDABLE)})")
    if overrides:
        config = config.replace(**overrides)
    lenient_prefixes, lenient_missing = (), ()

    have_train = (root / WEIGHTS_FILE).is_file()
    have_deploy = (root / DEPLOY_WEIGHTS_FILE).is_file()
    if deploy is None:
        deploy = not have_train and have_deploy
    name = DEPLOY_WEIGHTS_FILE if deploy and (have_deploy or not have_train) else WEIGHTS_FILE
    if not (root / name).is_file():
        raise ConfigError(f"{root}: no weights ({WEIGHTS_FILE} or {DEPLOY_WEIGHTS_FILE})")
    tensors = _read_weights(root, name, meta)
    model = OverLoCK(config, deploy=(name == DEPLOY_WEIGHTS_FILE), **model_kwargs)
    if "num_classes" in overrides:
        lenient_prefixes = _classifier_prefixes(model)
    if "aux_head" in overrides:
        lenient_missing = ("aux_head.",)
    load_state(model, tensors, root / name, lenient_prefixes, lenient_missing)
    if deploy and not model.deployed:
        model.reparam()
    return model


def load_program(path: str | os.PathLike):
    """The `torch.export.ExportedProgram` (`model.pt2`) of a model directory.

    The file's size and sha256 are checked against config.json first. `import overlock` registers
    the `overlock::na2d_av` op the program calls; run it with `program.module()(images)`.
    Note: torch's `.pt2` reader unpickles tensor subclasses if a file contains them (ours never
    does); `create_model(dir)` reads safetensors only and is the path for untrusted directories.

    Raises:
        ConfigError: a missing, truncated, replaced or unreadable program (one line).
    """
    root = Path(path)
    meta = read_model_dir(root)
    where = root / PROGRAM_FILE
    if not where.is_file():
        raise ConfigError(f"{where}: missing (the export could not write it; see config.json checks)")
    _check_record(where, (meta.get("files") or {}).get(PROGRAM_FILE))
    try:
        return torch.export.load(str(where))
    except Exception as e:  # noqa: BLE001 - any reader error becomes one line
        message = " ".join(str(e).split())[:300]
        raise ConfigError(f"{where}: not a readable torch.export program ({type(e).__name__}: "
                          f"{message})") from None
