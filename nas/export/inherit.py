"""`--from-supernet`: a trial's weights inherited from a trained supernet - its sub-network,
batch-norm statistics re-estimated as the study's `supernet` scoring did (else on the supernet's
own data set), validated there. The folder and card checks are `nas.supernet.folder`'s, shared
with the `supernet` evaluator."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from overlock import ConfigError, OverLoCKConfig, hub
from nas.selection import ExportError
from nas.storage import jsonable as _jsonable
from nas.storage import one_line as _one_line
from nas.supernet import folder as supernet_folder

__all__ = ["SupernetStart", "supernet_start", "check_classes", "inherit_weights"]


@dataclass
class SupernetStart:
    """Where `--from-supernet` takes a trial's weights from (`supernet_start` builds it).

    Args:
        folder: the folder `overlock-nas supernet train --out` wrote (absolute).
        card: its card.json.
        scoring: the `supernet` evaluator's settings the sub-network is re-estimated and validated
            with (bn_recalibration_batches, batch_size, eval_batch_size): the study's when its
            evaluator is this supernet, else the evaluator's defaults.
    """

    folder: str
    card: dict
    scoring: dict

    def supernet(self):
        """The supernet, loaded once per process (several trials of `--top K` share it)."""
        try:
            return supernet_folder.load(self.folder)
        except supernet_folder.SupernetFolderError as e:
            raise ExportError(f"--from-supernet {self.folder}: {e}") from None


def supernet_start(study, from_supernet) -> SupernetStart:
    """`--from-supernet [DIR]`: DIR (a folder, or its supernet.safetensors), or with `True` / ""
    the study's own supernet (`evaluator: {name: supernet, weights}` or
    `proxy_gate: {proxy: supernet, weights}`). ExportError (one line): no supernet named, two
    different ones, no supernet.safetensors / card.json, an unreadable card, no finished epoch."""
    from nas.evaluators import get_evaluator

    given = from_supernet not in (True, "")
    text = os.fspath(from_supernet) if given else _study_supernet(study)
    try:
        folder = supernet_folder.resolve(text)
        card = supernet_folder.read_card(folder)
    except supernet_folder.SupernetFolderError as e:
        raise ExportError(f"--from-supernet {text}: {e}") from None
    stored = study.user_attrs.get("evaluator")
    same = (isinstance(stored, Mapping) and stored.get("name") == "supernet"
            and os.path.abspath(str(stored.get("weights"))) == folder)
    # the study's own scoring settings when it scored with this supernet (its data set, validation
    # subset and resolution too), so the inherited-weight accuracy is measured as the score was
    keys = ("bn_recalibration_batches", "batch_size", "eval_batch_size", "dataset", "val_images", "resolution")
    scoring = {}
    if same:   # a study stored before val_images existed (or with it None) validated every image
        scoring = {k: stored[k] for k in keys if stored.get(k) is not None}
        scoring["val_images"] = stored.get("val_images")
    try:
        ev = get_evaluator("supernet", {"weights": folder, **scoring})
    except ValueError as e:
        raise ExportError(f"--from-supernet {folder}: {e}") from None
    return SupernetStart(folder=folder, card=card, scoring={k: ev.settings[k] for k in keys})


def _study_supernet(study) -> str:
    """The supernet folder the study itself used (its evaluator or its proxy gate)."""
    named = {}
    stored = study.user_attrs.get("evaluator")
    if isinstance(stored, Mapping) and stored.get("name") == "supernet" and stored.get("weights"):
        named["evaluator"] = str(stored["weights"])
    gate = _study_file_gate(study)
    if gate:
        named["proxy_gate"] = gate
    if not named:
        raise ExportError("--from-supernet: the study used no supernet (neither evaluator: {name: "
                          "supernet, weights: DIR} nor proxy_gate: {proxy: supernet, weights: DIR}); "
                          "name one: --from-supernet DIR")
    if len({os.path.abspath(os.path.expanduser(v)) for v in named.values()}) > 1:
        raise ExportError(f"--from-supernet: the study names two supernets (evaluator: "
                          f"{named['evaluator']}, proxy_gate: {named['proxy_gate']}); name one: "
                          "--from-supernet DIR")
    return next(iter(named.values()))


def _study_file_gate(study) -> str | None:
    """`proxy_gate.weights` of the stored study file when the gate is a supernet (relative paths
    are read from the current directory, as the search read them)."""
    import yaml

    text = study.user_attrs.get("study_file")
    try:
        doc = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        return None
    gate = doc.get("proxy_gate") if isinstance(doc, dict) else None
    if isinstance(gate, dict) and gate.get("proxy") == "supernet" and gate.get("weights"):
        return str(gate["weights"])
    return None


def check_classes(start: SupernetStart, settings: Mapping | None, resolution, what: str,
                  recorded: int | None = None) -> None:
    """ExportError (one line) when the data set `settings` (or its `recorded` class count) has
    other classes / input channels than the supernet was trained with."""
    from nas.data import DataError, load_dataset

    card = start.card
    if recorded is not None:
        shape = (int(recorded), card.get("in_chans", 3))
    elif settings is None or _jsonable(settings) == _jsonable(card["dataset_settings"]):
        return
    else:
        try:
            data = load_dataset(dict(settings), tuple(resolution))
        except DataError as e:
            raise ExportError(f"{what}: cannot read it to check its classes ({_one_line(e)})") from None
        shape = (data.num_classes, data.in_chans)
    if shape != (card["num_classes"], card.get("in_chans", shape[1])):
        raise ExportError(f"--from-supernet {start.folder}: the supernet was trained on "
                          f"{card['num_classes']} classes ({card.get('in_chans', 3)} channels), {what} "
                          f"has {shape[0]} ({shape[1]}); use a supernet trained on that data set")


def inherit_weights(study, trial, config: OverLoCKConfig, start: SupernetStart, seed: int,
                    log: Callable[[str], None]):
    """(model, weights record): the trial's sub-network of the supernet, its batch-norm statistics
    re-estimated on the card's data set (the `supernet` evaluator's re-estimation:
    `nas.supernet.score`), and its inherited-weight validation accuracy / loss measured there."""
    from nas.data import DataError, load_dataset
    from nas.supernet.score import rescore

    card, scoring = start.card, start.scoring
    stored = study.user_attrs.get("evaluator")
    recorded = (trial.user_attrs.get("dataset") or {}).get("classes")
    check_classes(start, stored.get("dataset") if isinstance(stored, Mapping) else None,
                  card["resolution"], "the study's data set", recorded)
    net = start.supernet()
    try:
        sub = net.fit(config)
    except ConfigError as e:
        raise ExportError(f"trial {trial.number}'s config is not in the supernet {start.folder}: {e}") from None
    try:
        data = load_dataset(scoring["dataset"], tuple(scoring["resolution"]))
    except DataError as e:
        raise ExportError(f"--from-supernet {start.folder}: the scoring data set: {_one_line(e)}") from None
    # the trial's own evaluation seed draws the same re-estimation sample the search's score used,
    # so the inherited-weight accuracy written here is the one the study recorded
    seed = int(trial.user_attrs.get("seed", seed))
    t0 = time.perf_counter()
    model = net.extract(sub)
    n = scoring["bn_recalibration_batches"]
    accuracy, val_loss = rescore(model, data, bn_batches=n, batch_size=scoring["batch_size"],
                                 eval_batch_size=scoring["eval_batch_size"], seed=seed)
    data.val.close()
    log(f"weights: inherited from the supernet {start.folder}; inherited-weight accuracy "
        f"{accuracy:.4f}, val loss {val_loss:.4f} (BN re-estimated on {n} batches)")
    record = {
        "folder": start.folder,
        "file": hub.file_record(os.path.join(start.folder, supernet_folder.WEIGHTS_FILE)),
        "space": (card.get("space") or {}).get("file"), "dataset": card["dataset"],
        "epochs": card["epochs_done"], "seed": card.get("seed"), "rule": card.get("rule"),
        "bn_recalibration": {"batches": n, "batch_size": scoring["batch_size"], "seed": seed,
                             "images": min(n * scoring["batch_size"], len(data.train)),
                             "from": "the scoring data set's training split, unaugmented"},
        "inherited_accuracy": accuracy, "inherited_val_loss": val_loss,
        "validated_on": {"images": len(data.val), "resolution": list(scoring["resolution"]),
                         "wall_s": round(time.perf_counter() - t0, 2)},
        "note": "inherited-weight accuracy: the sub-network with the supernet's weights and "
                "re-estimated batch-norm statistics, not trained stand-alone",
    }
    if trial.user_attrs.get("weights"):
        log(f"(the trial's own trained weights {trial.user_attrs['weights']} are not used)")
    return model, {"source": "supernet", "supernet": record}
