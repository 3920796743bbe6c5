"""Declarative OverLoCK search spaces.

A space is data (a YAML section or file)::

    base: overlock_xt              # preset (or a config mapping) giving every field not searched
    fixed: {num_classes: 10, resolution: 64}
    dimensions:
      width: {choices: [48, 56, 64]}              # a free variable, used by `derived`
      region_count: {low: 3, high: 9, step: 2}    # a config field
      dynamic_kernels[0]: {choices: [7, 9, 11, 13]}
      small_kernel: {choices: [3, 5], when: {region_count: [5, 7, 9]}}   # conditional
    derived:                                       # tied dimensions, evaluated in order
      widths: "[width, 2 * width, 4 * width, 6 * width]"
    splits:                                        # a depth budget divided between nets
      - name: deep_depth
        total: {low: 6, high: 10}
        parts: [overview_depth, focus_depths[0], focus_depths[1]]
        min: [1, 2, 1]

Dimensions are sampled in the order written (a `when` may only refer to an earlier one), then
splits, then derived expressions; the result is validated as an `OverLoCKConfig`.

The same decision procedure drives every sampler: Optuna's define-by-run trial (so every Optuna
sampler works, conditional dimensions included), plain seeded uniform sampling, and exhaustive
enumeration of finite spaces.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import os
import random
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import yaml

from overlock.config import PRESETS, ConfigError, OverLoCKConfig

_FIELD_NAMES = {f for f in OverLoCKConfig.__dataclass_fields__}
_TARGET = re.compile(r"^([a-z_][a-z0-9_]*)(?:\[(\d+)\])?$")
_DIM_KEYS = {"choices", "low", "high", "step", "log", "value", "when", "default"}


class SpaceError(ValueError):
    """A malformed or impossible space; the message names the key."""


# ------------------------------------------------------------------------- expressions
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_FUNCS = {"int": int, "round": round, "min": min, "max": max, "float": float, "abs": abs}


def _eval(node: ast.AST, names: Mapping[str, Any]):
    if isinstance(node, ast.Expression):
        return _eval(node.body, names)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise KeyError(node.id)
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval(node.left, names), _eval(node.right, names))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, names)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, names) for e in node.elts]
    if isinstance(node, ast.Subscript):
        return _eval(node.value, names)[_eval(node.slice, names)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
        return _FUNCS[node.func.id](*[_eval(a, names) for a in node.args])
    raise ValueError(f"unsupported expression element {ast.dump(node)[:40]}")


def _compile(expr: str, where: str) -> ast.Expression:
    try:
        tree = ast.parse(str(expr), mode="eval")
        _eval(tree, _AnyNames())  # reject unsupported syntax early
    except SyntaxError as e:
        raise SpaceError(f"{where}: {expr!r} is not a valid expression ({e.msg})") from None
    except ValueError as e:
        raise SpaceError(f"{where}: {expr!r}: {e}") from None
    except Exception:
        pass
    return tree


class _AnyNames(dict):
    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return 1


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class Dimension:
    """One searched variable: a config field (`region_count`, `widths[2]`) or a free variable."""

    name: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: tuple = ()          # ((dimension name, allowed values), ...)
    default: Any = None       # value when a `when` condition does not hold (else the base's)

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(float(v).is_integer() for v in (self.low, self.high)) \
            and (self.step is None or float(self.step).is_integer())

    def options(self) -> list | None:
        """The finite list of values, or None for a continuous range."""
        if self.choices is not None:
            return list(self.choices)
        if self.is_int:
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9))
            return [self.low + i * self.step for i in range(n + 1)]
        return None

    def describe(self) -> str:
        if self.choices is not None:
            text = "choices " + ", ".join(json.dumps(c) for c in self.choices)
        else:
            text = f"{'int' if self.is_int else 'float'} {self.low:g}..{self.high:g}"
            if self.step:
                text += f" step {self.step:g}"
            if self.log:
                text += " log"
        if self.when:
            text += " when " + ", ".join(f"{k} in {list(v)}" for k, v in self.when)
        return text


@dataclass(frozen=True)
class Split:
    """A depth budget `total` divided between `parts` (each within [min, max])."""

    name: str
    total: Dimension
    parts: tuple
    mins: tuple
    maxs: tuple


class _Chooser:
    """How a decision is made: `pick(dim_name, options|None, dimension) -> value`."""

    def pick(self, name: str, options: list | None, dim: Dimension):
        raise NotImplementedError


class _RandomChooser(_Chooser):
    def __init__(self, rng: random.Random):
        self.rng = rng

    def pick(self, name, options, dim):
        if options is not None:
            return self.rng.choice(options)
        if dim.log:
            return math.exp(self.rng.uniform(math.log(dim.low), math.log(dim.high)))
        return self.rng.uniform(dim.low, dim.high)


class _OptunaChooser(_Chooser):
    def __init__(self, trial):
        self.trial = trial

    def pick(self, name, options, dim):
        t = self.trial
        if dim.choices is not None:
            encoded = [json.dumps(c) for c in dim.choices]
            if all(isinstance(c, (int, float, str, bool)) for c in dim.choices):
                return t.suggest_categorical(name, list(dim.choices))
            return json.loads(t.suggest_categorical(name, encoded))
        if dim.is_int:
            return t.suggest_int(name, int(dim.low), int(dim.high), step=int(dim.step or 1),
                                 log=dim.log)
        return t.suggest_float(name, float(dim.low), float(dim.high), step=dim.step, log=dim.log)


class _OdometerChooser(_Chooser):
    """Replays a prefix of option indices and records option counts (exhaustive DFS)."""

    def __init__(self, prefix: list[int]):
        self.prefix = prefix
        self.counts: list[int] = []

    def pick(self, name, options, dim):
        if options is None:
            raise SpaceError(f"dimensions.{dim.name}: continuous range; the space is not enumerable")
        i = len(self.counts)
        idx = self.prefix[i] if i < len(self.prefix) else 0
        self.counts.append(len(options))
        return options[idx]


class _NotContained(Exception):
    pass


def _same(a, b) -> bool:
    return json.dumps(a) == json.dumps(b) or (
        isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b))


class _PinnedOdometer(_OdometerChooser):
    """Odometer whose decisions on config fields only take the target config's value."""

    def __init__(self, prefix, target: dict, derived_targets: set):
        super().__init__(prefix)
        self.target = target
        self.derived_targets = derived_targets

    def _desired(self, name: str):
        name = name.split("@")[0]
        if "." in name:  # a split part: "<split>.<field>"
            name = name.split(".", 1)[1]
        m = _TARGET.match(name)
        if not m or m.group(1) not in self.target or name in self.derived_targets \
                or m.group(1) in self.derived_targets:
            return _NotContained  # a free variable: enumerate it
        value = self.target[m.group(1)]
        return value if m.group(2) is None else value[int(m.group(2))]

    def pick(self, name, options, dim):
        desired = self._desired(name)
        if desired is not _NotContained:
            if options is None:
                options = [desired] if self._in_range(desired, dim) else []
            else:
                options = [o for o in options if _same(o, desired)]
            if not options:
                self.counts.append(0)
                raise _NotContained(name)
        return super().pick(name, options, dim)

    @staticmethod
    def _in_range(value, dim) -> bool:
        return isinstance(value, (int, float)) and dim.low <= value <= dim.high


def _next_prefix(prefix: list[int], counts: list[int]) -> list[int] | None:
    """The next decision path after `prefix` given each decision's option count (odometer)."""
    prefix = list(prefix[:len(counts)]) + [0] * (len(counts) - len(prefix))
    i = len(counts) - 1
    while i >= 0 and prefix[i] + 1 >= counts[i]:
        i -= 1
    return None if i < 0 else prefix[:i] + [prefix[i] + 1]


def _parse_target(name: str, where: str):
    m = _TARGET.match(name)
    if not m:
        raise SpaceError(f"{where}: {name!r} is not a field name or field[index]")
    return m.group(1), (int(m.group(2)) if m.group(2) is not None else None)


class SearchSpace:
    """A validated declarative space. Build with `SearchSpace.from_dict` or `load_space`."""

    def __init__(self, raw: dict, base: OverLoCKConfig, fixed: dict, dimensions: list[Dimension],
                 splits: list[Split], derived: list[tuple[str, str, ast.Expression]], name: str):
        self.raw = raw
        self.base = base
        self.fixed = fixed
        self.dimensions = dimensions
        self.splits = splits
        self.derived = derived
        self.name = name

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "space") -> "SearchSpace":
        if not isinstance(raw, Mapping):
            raise SpaceError(f"{where}: must be a mapping, got {type(raw).__name__}")
        allowed = {"name", "base", "fixed", "dimensions", "derived", "splits", "description"}
        for key in raw:
            if key not in allowed:
                raise SpaceError(f"{where}.{key}: unknown key (allowed: {', '.join(sorted(allowed))})")
        base_spec = raw.get("base", "overlock_xt")
        if isinstance(base_spec, str):
            if base_spec not in PRESETS:
                raise SpaceError(f"{where}.base: unknown preset {base_spec!r} (known: {', '.join(PRESETS)})")
            base = PRESETS[base_spec]
        elif isinstance(base_spec, Mapping):
            try:
                base = OverLoCKConfig.from_dict(base_spec)
            except ConfigError as e:
                raise SpaceError(f"{where}.base: {e}") from None
        else:
            raise SpaceError(f"{where}.base: must be a preset name or a config mapping")

        fixed = dict(raw.get("fixed") or {})
        for key in fixed:
            field_name, _ = _parse_target(key, f"{where}.fixed")
            if field_name not in _FIELD_NAMES:
                raise SpaceError(f"{where}.fixed.{key}: not an OverLoCKConfig field")

        dims: list[Dimension] = []
        seen: set[str] = set()
        raw_dims = raw.get("dimensions") or {}
        if not isinstance(raw_dims, Mapping):
            raise SpaceError(f"{where}.dimensions: must be a mapping of name -> spec")
        for name, spec in raw_dims.items():
            dims.append(cls._parse_dimension(str(name), spec, f"{where}.dimensions.{name}", seen))
            seen.add(str(name))

        splits = []
        for i, spec in enumerate(raw.get("splits") or []):
            splits.append(cls._parse_split(spec, f"{where}.splits[{i}]", seen))

        derived = []
        raw_derived = raw.get("derived") or {}
        if not isinstance(raw_derived, Mapping):
            raise SpaceError(f"{where}.derived: must be a mapping of field -> expression")
        for target, expr in raw_derived.items():
            field_name, _ = _parse_target(target, f"{where}.derived")
            if field_name not in _FIELD_NAMES:
                raise SpaceError(f"{where}.derived.{target}: not an OverLoCKConfig field")
            derived.append((target, str(expr), _compile(expr, f"{where}.derived.{target}")))

        space = cls(dict(raw), base, fixed, dims, splits, derived, str(raw.get("name", "space")))
        space._check_sample(where)
        return space

    @staticmethod
    def _parse_dimension(name: str, spec, where: str, seen: set, free_name: bool = False) -> Dimension:
        if not free_name:
            _parse_target(name, where)
        if not isinstance(spec, Mapping):
            spec = {"choices": spec} if isinstance(spec, list) else {"value": spec}
        unknown = set(spec) - _DIM_KEYS
        if unknown:
            raise SpaceError(f"{where}.{sorted(unknown)[0]}: unknown key (allowed: {', '.join(sorted(_DIM_KEYS))})")
        when = []
        for cond, allowed in (spec.get("when") or {}).items():
            if cond not in seen:
                raise SpaceError(f"{where}.when.{cond}: must name an earlier dimension")
            allowed = allowed if isinstance(allowed, list) else [allowed]
            when.append((cond, tuple(json.dumps(a) for a in allowed)))
        if "value" in spec:
            return Dimension(name, choices=(spec["value"],), when=tuple(when), default=spec.get("default"))
        if "choices" in spec:
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices:
                raise SpaceError(f"{where}.choices: must be a non-empty list")
            return Dimension(name, choices=tuple(choices), when=tuple(when), default=spec.get("default"))
        if "low" in spec and "high" in spec:
            low, high, step = spec["low"], spec["high"], spec.get("step")
            for key, v in (("low", low), ("high", high), ("step", step)):
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise SpaceError(f"{where}.{key}: {v!r} is not a number")
            if high < low:
                raise SpaceError(f"{where}: high={high} < low={low}")
            if step is not None and step <= 0:
                raise SpaceError(f"{where}.step: {step} must be > 0")
            log = bool(spec.get("log", False))
            if log and low <= 0:
                raise SpaceError(f"{where}.log: needs low > 0")
            return Dimension(name, low=low, high=high, step=step, log=log, when=tuple(when),
                             default=spec.get("default"))
        raise SpaceError(f"{where}: needs `choices`, `low`+`high`, or `value`")

    @classmethod
    def _parse_split(cls, spec, where: str, seen: set) -> Split:
        if not isinstance(spec, Mapping):
            raise SpaceError(f"{where}: must be a mapping with total and parts")
        for key in spec:
            if key not in {"name", "total", "parts", "min", "max"}:
                raise SpaceError(f"{where}.{key}: unknown key (allowed: name, total, parts, min, max)")
        parts = spec.get("parts")
        if not isinstance(parts, list) or len(parts) < 2:
            raise SpaceError(f"{where}.parts: must list at least two depth fields")
        for p in parts:
            field_name, _ = _parse_target(p, f"{where}.parts")
            if field_name not in ("base_depths", "overview_depth", "focus_depths"):
                raise SpaceError(f"{where}.parts: {p!r} is not a depth field")
        n = len(parts)
        mins = spec.get("min", 1)
        maxs = spec.get("max", 10 ** 6)
        mins = tuple(mins if isinstance(mins, list) else [mins] * n)
        maxs = tuple(maxs if isinstance(maxs, list) else [maxs] * n)
        if len(mins) != n or len(maxs) != n:
            raise SpaceError(f"{where}.min/max: must have one entry per part ({n})")
        name = str(spec.get("name", "split_" + "_".join(re.sub(r"\W", "", p) for p in parts)))
        if "total" not in spec:
            raise SpaceError(f"{where}.total: missing (an int, or choices / low+high)")
        total = cls._parse_dimension(name + ".total", spec["total"], f"{where}.total", seen,
                                     free_name=True)
        opts = total.options()
        if opts is None or any(not float(o).is_integer() for o in opts):
            raise SpaceError(f"{where}.total: must be integer-valued")
        if min(opts) < sum(mins) or max(opts) > sum(maxs):
            raise SpaceError(f"{where}.total: {min(opts)}..{max(opts)} cannot be split with "
                             f"min {list(mins)} / max {list(maxs)}")
        return Split(name, total, tuple(parts), mins, maxs)

    # ------------------------------------------------------------------ building
    def _build(self, chooser: _Chooser) -> OverLoCKConfig:
        values: dict[str, Any] = {}
        data = self.base.to_dict()
        for f in ("stem_width", "context_dim"):  # re-derive from widths unless fixed/searched
            data.pop(f)
        assigned: dict[str, Any] = {}

        def assign(target: str, value, where: str):
            field_name, index = _parse_target(target, where)
            if index is None:
                data[field_name] = value
            else:
                current = list(data[field_name]) if isinstance(data.get(field_name), (list, tuple)) \
                    else list(self.base.to_dict()[field_name])
                if index >= len(current):
                    raise SpaceError(f"{where}: {target} index out of range (length {len(current)})")
                current[index] = value
                data[field_name] = current
            assigned[target] = value

        for key, value in self.fixed.items():
            assign(key, value, f"fixed.{key}")
        for dim in self.dimensions:
            active = all(json.dumps(values.get(c)) in allowed for c, allowed in dim.when)
            if active:
                value = chooser.pick(dim.name, dim.options(), dim)
            else:
                value = dim.default
            values[dim.name] = value
            field_name, _ = _parse_target(dim.name, dim.name)
            if field_name in _FIELD_NAMES and value is not None:
                assign(dim.name, value, f"dimensions.{dim.name}")
        for split in self.splits:
            total = int(chooser.pick(split.total.name, split.total.options(), split.total))
            values[split.total.name] = total
            room = total
            n = len(split.parts)
            for i, part in enumerate(split.parts):
                later_min = sum(split.mins[i + 1:])
                later_max = sum(split.maxs[i + 1:])
                lo = max(split.mins[i], room - later_max)
                hi = min(split.maxs[i], room - later_min)
                if i == n - 1:
                    value = room
                else:
                    d = Dimension(f"{split.name}.{part}@{lo}-{hi}", low=lo, high=hi)
                    value = int(chooser.pick(d.name, d.options(), d))
                values[f"{split.name}.{part}"] = value
                assign(part, value, f"splits.{split.name}")
                room -= value
        names = {**{k: v for k, v in data.items()}, **values}
        for target, expr, tree in self.derived:
            try:
                value = _eval(tree, names)
            except KeyError as e:
                raise SpaceError(f"derived.{target}: {expr!r} uses unknown name {e.args[0]!r}") from None
            except Exception as e:  # noqa: BLE001 - report any arithmetic problem with its key
                raise SpaceError(f"derived.{target}: {expr!r} failed: {e}") from None
            assign(target, value, f"derived.{target}")
            names = {**data, **values}
        try:
            return OverLoCKConfig.from_dict(data)
        except ConfigError as e:
            raise SpaceError(f"space {self.name!r} produced an invalid config: {e}") from None

    def _check_sample(self, where: str, tries: int = 200) -> None:
        """Fail at load time when the space cannot produce a valid config."""
        rng = random.Random(0)
        last = None
        for _ in range(tries):
            try:
                self._build(_RandomChooser(rng))
                return
            except SpaceError as e:
                last = e
        raise SpaceError(f"{where}: impossible space, {tries} samples all invalid; last: {last}")

    # ------------------------------------------------------------------ public API
    def suggest(self, trial) -> OverLoCKConfig:
        """Sample through an Optuna trial (define-by-run); raises SpaceError on an invalid combination."""
        return self._build(_OptunaChooser(trial))

    def sample(self, seed: int | random.Random | None = None) -> OverLoCKConfig:
        """One config, uniformly per decision; retries invalid combinations (up to 100 times)."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        last = None
        for _ in range(100):
            try:
                return self._build(_RandomChooser(rng))
            except SpaceError as e:
                last = e
        raise last

    def enumerate(self, skip_invalid: bool = True) -> Iterator[OverLoCKConfig]:
        """Every config of a finite space (in a fixed order)."""
        for config, _ in self.enumerate_weighted(skip_invalid):
            yield config

    def enumerate_weighted(self, skip_invalid: bool = True) -> Iterator[tuple[OverLoCKConfig, float]]:
        """Every config with its probability under `sample` (each decision uniform)."""
        prefix: list[int] = []
        while True:
            chooser = _OdometerChooser(prefix)
            try:
                config = self._build(chooser)
                yield config, math.prod(1.0 / c for c in chooser.counts)
            except SpaceError:
                if not skip_invalid:
                    raise
            prefix = _next_prefix(prefix, chooser.counts)
            if prefix is None:
                return

    def is_finite(self) -> bool:
        if any(d.options() is None for d in self.dimensions):
            return False
        return all(s.total.options() is not None for s in self.splits)

    def size(self, max_paths: int = 2_000_000) -> int | None:
        """Number of points (decision paths) in the space; None when continuous.

        Counted exactly: dimensions nothing depends on multiply; the conditional ones and the
        splits are enumerated (at most `max_paths` of their paths, else SpaceError).
        """
        if not self.is_finite():
            return None
        controlling = {c for d in self.dimensions for c, _ in d.when}
        independent = [d for d in self.dimensions if not d.when and d.name not in controlling]
        product = 1
        for d in independent:
            product *= len(d.options())
        rest = SearchSpace(self.raw, self.base, self.fixed,
                           [d for d in self.dimensions if d not in independent], self.splits, [],
                           self.name)
        paths = 0
        prefix: list[int] = []
        while True:
            chooser = _OdometerChooser(prefix)
            try:
                rest._build_decisions(chooser)
            except SpaceError:
                pass
            paths += 1
            if paths > max_paths:
                raise SpaceError(f"space {self.name!r}: more than {max_paths} conditional/split "
                                 "paths to count; simplify its conditions")
            prefix = _next_prefix(prefix, chooser.counts)
            if prefix is None:
                break
        return paths * product

    def _build_decisions(self, chooser: _Chooser) -> None:
        """The decisions alone (no config validation), for counting."""
        values = {}
        for dim in self.dimensions:
            active = all(json.dumps(values.get(c)) in allowed for c, allowed in dim.when)
            values[dim.name] = chooser.pick(dim.name, dim.options(), dim) if active else dim.default
        for split in self.splits:
            total = int(chooser.pick(split.total.name, split.total.options(), split.total))
            room = total
            for i, part in enumerate(split.parts[:-1]):
                lo = max(split.mins[i], room - sum(split.maxs[i + 1:]))
                hi = min(split.maxs[i], room - sum(split.mins[i + 1:]))
                d = Dimension(f"{split.name}.{part}", low=lo, high=hi)
                room -= int(chooser.pick(d.name, d.options(), d))

    def contains(self, config: OverLoCKConfig) -> bool:
        """Whether `config` is a point of the space (finite or not).

        Decisions that set a config field directly are pinned to the config's value, so only free
        variables and split totals are enumerated.
        """
        derived_targets = {t for t, _, _ in self.derived}
        target = config.to_dict()
        want = config.config_hash()
        prefix: list[int] = []
        while True:
            chooser = _PinnedOdometer(prefix, target, derived_targets)
            try:
                if self._build(chooser).config_hash() == want:
                    return True
            except (SpaceError, _NotContained):
                pass
            # a pinned decision with no matching option (count 0): nothing below it matches
            prefix = _next_prefix(prefix, [max(c, 1) for c in chooser.counts])
            if prefix is None:
                return False

    def to_dict(self) -> dict:
        return dict(self.raw)

    def describe(self) -> list[tuple[str, str]]:
        rows = [(d.name, d.describe()) for d in self.dimensions]
        rows += [(f"{s.name} (split)", f"total {s.total.describe()} into {', '.join(s.parts)}")
                 for s in self.splits]
        rows += [(t, f"= {e}") for t, e, _ in self.derived]
        rows += [(k, f"fixed {json.dumps(v)}") for k, v in self.fixed.items()]
        return rows


def load_space(source: str | os.PathLike | Mapping[str, Any]) -> SearchSpace:
    """A space from a mapping, a YAML file, or a study file with a `space:` section.

    A study file's `space:` may itself be a path (relative to the study file).
    """
    if isinstance(source, Mapping):
        raw = source.get("space", source) if "dimensions" not in source else source
        if isinstance(raw, (str, os.PathLike)):
            return load_space(raw)
        return SearchSpace.from_dict(raw)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise SpaceError(f"space file {path!r} does not exist")
    with open(path) as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as e:
            raise SpaceError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if isinstance(raw, Mapping) and "space" in raw and "dimensions" not in raw:
        inner = raw["space"]
        if isinstance(inner, str):
            return load_space(os.path.join(os.path.dirname(path), inner))
        return SearchSpace.from_dict(inner, where=f"{path}: space")
    return SearchSpace.from_dict(raw, where=path)
