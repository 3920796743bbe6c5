"""Train an OverLoCK supernet on a data set: the sandwich rule with in-place distillation (BigNAS).

Every step runs the largest sub-network on the labels (the train evaluator's loss: label smoothing
plus the auxiliary head), then the smallest and `random_subnets` random sub-networks on the
largest one's soft predictions (in-place distillation: the children learn the parent's output
distribution, not the hard labels), accumulates the gradients of all of them and takes one
optimiser step. Training the extremes every step is what keeps the smallest sub-networks from
being under-trained (BigNAS, Yu et al. 2020); the random ones cover the middle.

`rule="max-first"` trains the largest network alone for the first `max_first_epochs`, then
switches to the sandwich rule: the first stage of OFA's progressive shrinking (a well-trained
parent before any child shares its weights), without OFA's per-dimension stages, which need the
space's dimensions to be typed (kernel / depth / width) while a space file's are free names.

Optimiser, schedule, augmentation, the largest network's loss, the epoch loop, batch-norm
re-estimation and validation are the project's one training recipe (`nas.training.Recipe`, the
train evaluator's): AdamW without decay on norms and biases, warm-up + cosine per step, the data
set kind's default augmentation; this module adds the sandwich step. The data order and the sub-networks drawn depend only on (seed, epoch, step), and
the optimiser state is saved every epoch, so a resumed run gives the same weights as one that
was never interrupted.

Files in `out_dir` (each written atomically, every epoch): `supernet.safetensors` (the weights,
written by `Supernet.save`), `train-state.pt` (optimiser, epoch, history: what resuming needs),
`card.json` and `card.md` (what it was trained on and how; `write_card`).
"""

from __future__ import annotations

import io
import json
import os
import platform
import random
import time
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from nas.supernet.folder import CARD_JSON, WEIGHTS_FILE
from nas.training import Recipe, resolved_augment
from nas.util import seed_mix, write_atomic

STATE_FILE = "train-state.pt"
CARD_MD = "card.md"
RULES = ("sandwich", "max-first")

# recipe settings (nas.training.SCHEMA) the supernet's training takes; AMP is not used here
TRAIN_KEYS = ("batch_size", "eval_batch_size", "lr", "min_lr", "weight_decay", "warmup_epochs",
              "label_smoothing", "aux_weight", "grad_clip", "augment", "bn_recalibration_batches")


class SupernetTrainError(RuntimeError):
    """Training cannot start or continue; the message is one line naming the cause."""


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a distribution (in-place distillation; equals KL up to a constant)."""
    return -(target_probs * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def subnets_for_step(supernet, rule: str, epoch: int, step: int, seed: int, random_subnets: int,
                     max_first_epochs: int) -> list:
    """The configs trained at (epoch, step): [max] while the parent trains alone, else
    [max, min, random x `random_subnets`]; the random ones are a function of (seed, epoch, step)."""
    from overlock.supernet import sample_config

    largest = sample_config(supernet, random.Random(0), kind="max")
    if rule == "max-first" and epoch < max_first_epochs:
        return [largest]
    rng = random.Random(seed_mix(seed, epoch, step, 7))
    return [largest, sample_config(supernet, rng, kind="min"),
            *(sample_config(supernet, rng, kind="random") for _ in range(random_subnets))]


def sandwich_step(supernet, recipe, optimizer, x, y, configs, where: str) -> dict:
    """One optimiser step over `configs` (the first is the teacher); {"loss_max", "loss_kd"}."""
    aux_weight = recipe.aux_weight
    optimizer.zero_grad(set_to_none=True)
    teacher, losses = None, []
    for i, config in enumerate(configs):
        supernet.set_active(config)
        out = supernet(x)
        if teacher is None:
            loss = recipe.loss(out, y)
            main = out["main"] if isinstance(out, dict) else out
            teacher = F.softmax(main.detach().float(), dim=1)
        else:
            main = out["main"] if isinstance(out, dict) else out
            loss = soft_cross_entropy(main, teacher)
            if isinstance(out, dict) and "aux" in out and aux_weight > 0:
                loss = loss + aux_weight * soft_cross_entropy(out["aux"], teacher)
        if not torch.isfinite(loss):
            raise SupernetTrainError(f"loss became {loss.item()} at {where} "
                                     f"(sub-network {i}: {config.summary()})")
        loss.backward()
        losses.append(float(loss.detach()))
    if recipe.grad_clip:
        torch.nn.utils.clip_grad_norm_(supernet.parameters(), recipe.grad_clip)
    optimizer.step()
    return {"loss_max": losses[0], "loss_kd": sum(losses[1:]) / max(len(losses) - 1, 1)}


def fingerprint(space_dict: dict, dataset: dict, settings: dict) -> dict:
    """What must not change between the epochs of one supernet (checked on resume)."""
    from nas.data import LOADER_KEYS

    data = {k: v for k, v in dataset.items() if k not in LOADER_KEYS}
    return json.loads(json.dumps({"space": space_dict, "dataset": data, **settings}, sort_keys=True))


def _recipe(dataset: Mapping, train_settings: Mapping | None) -> tuple[Recipe, dict]:
    """(the recipe, the data set settings with defaults filled in), validated (one-line
    ValueError naming a bad key)."""
    from nas.settings import dataset as check_dataset

    extra = dict(train_settings or {})
    unknown = sorted(set(extra) - set(TRAIN_KEYS))
    if unknown:
        raise ValueError(f"train settings: unknown key {unknown[0]!r} (known: {', '.join(TRAIN_KEYS)})")
    data_settings = check_dataset("dataset", dict(dataset))
    return Recipe.from_settings(extra), data_settings


def _settings_record(recipe, epochs, seed, rule, random_subnets, max_first_epochs, resolution) -> dict:
    return {"epochs": epochs, "seed": seed, "rule": rule, "random_subnets": random_subnets,
            "max_first_epochs": max_first_epochs if rule == "max-first" else 0,
            "resolution": list(resolution), "train_settings": {k: getattr(recipe, k) for k in TRAIN_KEYS}}


def _check_rule(rule: str, random_subnets: int, max_first_epochs: int, epochs: int) -> None:
    if rule not in RULES:
        raise ValueError(f"rule={rule!r} must be one of {', '.join(RULES)}")
    if random_subnets < 0:
        raise ValueError(f"random_subnets={random_subnets} must be >= 0")
    if epochs < 1:
        raise ValueError(f"epochs={epochs} must be >= 1")
    if rule == "max-first" and not 0 < max_first_epochs < epochs:
        raise ValueError(f"max_first_epochs={max_first_epochs} must be in 1..{epochs - 1} "
                         f"(the sandwich rule trains the rest)")


def train_supernet(space_source, dataset: Mapping, out_dir, *, epochs: int, seed: int = 0,
                   rule: str = "sandwich", random_subnets: int = 2, max_first_epochs: int = 0,
                   train_settings: Mapping | None = None, resolution=None, threads: int | None = None,
                   device: str = "cpu", command: str | None = None,
                   on_step: Callable[[dict], None] | None = None,
                   on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train (or resume) the supernet of `space_source` on `dataset`; returns the card (a dict).

    Args:
        space_source: a space file / mapping (`space.load_space`).
        dataset: a `dataset:` mapping (`nas.data`), as a study's evaluator takes it.
        out_dir: where the weights, the training state and the card go; if it holds a training
            state, training continues from its last finished epoch (same settings required).
        epochs: the full budget (the schedule's length).
        rule: "sandwich" or "max-first" (module docstring); random_subnets: random children a step.
        train_settings: train-evaluator settings (`TRAIN_KEYS`): batch_size, lr, augment, ...
        resolution: training resolution (None: the space's).
        on_step / on_epoch: progress callbacks ({"epoch", "step", "steps", ...}).

    Raises:
        ValueError: a bad setting (one line). SupernetTrainError: the state in `out_dir` belongs
        to other settings, or the loss diverged.
    """
    from space import load_space

    _check_rule(rule, random_subnets, max_first_epochs, epochs)
    recipe, data_settings = _recipe(dataset, train_settings)
    space = load_space(space_source)
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(space_source, space, recipe, data_settings, out_dir, epochs, seed, rule,
                      random_subnets, max_first_epochs, resolution, device, command, on_step, on_epoch)
    finally:
        torch.set_num_threads(threads_before)   # `threads` holds for this training only


def _train(space_source, space, recipe, data_settings, out_dir, epochs, seed, rule, random_subnets,
           max_first_epochs, resolution, device, command, on_step, on_epoch) -> dict:
    from nas.data import load_dataset

    res = _resolution(space, resolution)
    data = load_dataset(data_settings, res)
    supernet = _build_supernet(space, data).to(device)
    optimizer = recipe.optimizer(supernet)
    record = _settings_record(recipe, epochs, seed, rule, random_subnets, max_first_epochs, res)
    print_ = fingerprint(space.to_dict(), data_settings, record)
    os.makedirs(out_dir, exist_ok=True)
    card = _resume(out_dir, supernet, optimizer, print_, device)
    card = card or _new_card(space_source, space, recipe, data_settings, data, res, record, device)
    session = {"started": _now(), "from_epoch": card["epochs_done"], "command": command,
               "load_start": [round(v, 2) for v in os.getloadavg()], "torch_threads": torch.get_num_threads()}
    if card["epochs_done"] < epochs:   # a finished run asked again trains nothing: no session
        card["sessions"].append(session)
    loop = _Loop(supernet, recipe, optimizer, data, record, device, on_step)
    for epoch in range(card["epochs_done"], epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        entry = loop.epoch(epoch)
        # CPU seconds too: on a shared machine they compare with other jobs' where wall time cannot
        entry.update(wall_s=round(time.perf_counter() - t0, 2), cpu_s=round(time.process_time() - c0, 2))
        card["history"].append(entry)
        card["epochs_done"] = epoch + 1
        card["wall_s"] = round(card["wall_s"] + entry["wall_s"], 2)
        card["cpu_s"] = round(card.get("cpu_s", 0.0) + entry["cpu_s"], 2)
        session.update(to_epoch=epoch + 1, ended=_now(),
                       load_end=[round(v, 2) for v in os.getloadavg()])
        _checkpoint(out_dir, supernet, optimizer, card, print_)
        if on_epoch:
            on_epoch(dict(entry, epochs=epochs))
    return card


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def _resolution(space, resolution) -> tuple[int, int]:
    if resolution is None:
        return tuple(space.sample(random.Random(0)).resolution)
    from nas.settings import resolution as check

    return tuple(check("resolution", resolution))


def _build_supernet(space, data):
    """The supernet of `space` with the data set's classes and input channels."""
    from overlock.supernet import Supernet

    return Supernet(space, num_classes=data.num_classes, in_chans=data.in_chans)


class _Loop:
    """One epoch of supernet training and its end-of-epoch check (largest and smallest
    sub-network, batch norm re-estimated, on the validation split)."""

    def __init__(self, supernet, recipe, optimizer, data, record, device, on_step):
        self.supernet, self.recipe, self.optimizer, self.data = supernet, recipe, optimizer, data
        self.record, self.device, self.on_step = record, torch.device(device), on_step
        self.steps = data.train.steps(recipe.batch_size, drop_last=True)
        self.schedule = recipe.schedule(self.steps, record["epochs"])

    def epoch(self, epoch: int) -> dict:
        r = self.record
        self.supernet.train()
        sums, n = {"loss_max": 0.0, "loss_kd": 0.0}, 0
        batches = self.recipe.epoch_batches(self.optimizer, self.data.train, epoch, seed=r["seed"],
                                            schedule=self.schedule, device=self.device)
        for i, lr, x, y in batches:
            configs = subnets_for_step(self.supernet, r["rule"], epoch, i, r["seed"],
                                       r["random_subnets"], r["max_first_epochs"])
            losses = sandwich_step(self.supernet, self.recipe, self.optimizer, x, y, configs,
                                   where=f"epoch {epoch + 1} step {i + 1} (lr {lr:.3g})")
            for k in sums:
                sums[k] += losses[k]
            n += 1
            if self.on_step:
                self.on_step({"epoch": epoch, "step": i + 1, "steps": self.steps, **losses})
        entry = {"epoch": epoch + 1, "loss_max": sums["loss_max"] / max(n, 1),
                 "loss_kd": sums["loss_kd"] / max(n, 1), "subnets_per_step": len(configs) if n else 0}
        entry.update(self.check(epoch))
        return entry

    def check(self, epoch: int) -> dict:
        """Validation accuracy / loss of the largest and smallest sub-network."""
        from overlock.supernet import sample_config

        from .score import score_subnet

        recipe, out = self.recipe, {}
        for kind in ("max", "min"):
            config = sample_config(self.supernet, random.Random(0), kind=kind)
            result = score_subnet(self.supernet, config, self.data,
                                  bn_batches=recipe.bn_recalibration_batches, batch_size=recipe.batch_size,
                                  eval_batch_size=recipe.eval_batch_size,
                                  seed=seed_mix(self.record["seed"], epoch, 2), device=str(self.device))
            out[f"{kind}_accuracy"] = round(result["accuracy"], 4)
            out[f"{kind}_val_loss"] = round(result["val_loss"], 4)
        self.data.val.close()
        self.supernet.train()
        return out


def _new_card(space_source, space, recipe, data_settings, data, res, record, device) -> dict:
    from nas.data import dataset_record

    source = os.path.abspath(os.fspath(space_source)) if isinstance(space_source, (str, os.PathLike)) else None
    return {
        "format": "overlock-nas/supernet",
        "space": {"file": source, "definition": space.to_dict()},
        "dataset": dataset_record(data_settings, data, res, resolved_augment(recipe.augment, data)),
        "dataset_settings": data_settings,
        **record,
        "num_classes": data.num_classes, "in_chans": data.in_chans,
        "epochs_done": 0, "wall_s": 0.0, "cpu_s": 0.0, "history": [], "sessions": [],
        "host": {"cpus": os.cpu_count(), "torch": torch.__version__, "device": str(device),
                 "machine": platform.machine()},
    }


def _checkpoint(out_dir, supernet, optimizer, card, print_) -> None:
    """Weights, then the state that points at them, then the card (each atomic)."""
    supernet.save(os.path.join(out_dir, WEIGHTS_FILE))   # atomic itself
    payload = {"optimizer": optimizer.state_dict(), "epochs_done": card["epochs_done"],
               "fingerprint": json.dumps(print_, sort_keys=True), "card": json.dumps(card)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(os.path.join(out_dir, STATE_FILE), buffer.getvalue())
    write_card(out_dir, card)


def _resume(out_dir, supernet, optimizer, print_, device) -> dict | None:
    """The card of the run in `out_dir` with the weights and optimiser restored, or None."""
    from safetensors.torch import load_file

    state_path, weights = os.path.join(out_dir, STATE_FILE), os.path.join(out_dir, WEIGHTS_FILE)
    if not os.path.exists(state_path):
        return None
    try:
        payload = torch.load(state_path, map_location=device, weights_only=True)
        tensors = load_file(weights, device=str(device))
    except Exception as e:  # noqa: BLE001 - any unreadable file: one line
        raise SupernetTrainError(f"resume: cannot read {out_dir}: {str(e).splitlines()[0][:160]}") from e
    mine = json.dumps(print_, sort_keys=True)
    if payload.get("fingerprint") != mine:
        old, new = json.loads(payload.get("fingerprint") or "{}"), print_
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise SupernetTrainError(f"resume: {out_dir} holds a supernet trained with other settings "
                                 f"({', '.join(changed)}); use another --out or the same settings")
    try:
        supernet.load_state_dict(tensors, strict=True)
        optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise SupernetTrainError(f"resume: {weights} does not fit: {str(e).splitlines()[0][:160]}") from e
    return json.loads(payload["card"])


def write_card(out_dir, card: dict) -> None:
    """card.json (everything) and card.md (the same, for people)."""
    write_atomic(os.path.join(out_dir, CARD_JSON), json.dumps(card, indent=2) + "\n")
    write_atomic(os.path.join(out_dir, CARD_MD), card_markdown(card))


def card_markdown(card: dict) -> str:
    d, h = card["dataset"], card["history"]
    lines = [f"# OverLoCK supernet ({card['rule']} rule)", "",
             f"- Space: `{card['space']['file'] or 'inline mapping'}`",
             f"- Data set: {d['description']}",
             f"- Resolution: {card['resolution'][0]}x{card['resolution'][1]}; classes {card['num_classes']}",
             f"- Epochs: {card['epochs_done']} of {card['epochs']}; seed {card['seed']}; "
             f"{card['random_subnets']} random sub-networks a step"
             + (f"; largest alone for {card['max_first_epochs']} epochs" if card["max_first_epochs"] else ""),
             f"- Training settings: `{json.dumps(card['train_settings'])}`",
             f"- Training wall time: {card['wall_s'] / 60:.1f} min, CPU time {card.get('cpu_s', 0) / 60:.1f} min "
             f"({card['host']['cpus']} CPUs seen, "
             f"torch {card['host']['torch']}, {card['host']['device']})", "", "Sessions (a resumed run has several):", ""]
    for s in card["sessions"]:
        lines.append(f"- {s['started']} -> {s.get('ended', '?')}: epochs {s['from_epoch']}..{s.get('to_epoch', s['from_epoch'])}, "
                     f"load average {s['load_start']} -> {s.get('load_end')}, {s['torch_threads']} threads; "
                     f"`{s.get('command') or 'python API'}`")
    lines += ["", "| epoch | loss (largest) | distillation loss | largest acc | largest val loss "
              "| smallest acc | smallest val loss | s |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in h:
        lines.append(f"| {e['epoch']} | {e['loss_max']:.3f} | {e['loss_kd']:.3f} | {e['max_accuracy']:.3f} "
                     f"| {e['max_val_loss']:.3f} | {e['min_accuracy']:.3f} | {e['min_val_loss']:.3f} | {e['wall_s']:.1f} |")
    return "\n".join(lines) + "\n"
