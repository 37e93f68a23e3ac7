"""The recipe: a TOML file validated once, at load, into typed dataclasses.

Everything downstream takes these objects (defined in `ensemble.config`), never raw dicts. A recipe has four tables::

    [data]        train / valid / test files, column names, valid_fraction
    [defaults]    training fields shared by every member (any TrainConfig field)
    [[members]]   name + model (hub id or directory) or init = "scratch" with arch and size,
                  plus any TrainConfig field overriding the defaults for that member
    [vote]        method and per-member weights

Mistakes raise `EnsembleError` with one line naming the file, the field path, the value and
what is allowed, e.g. ``demo.toml: members[bert].lr: must be > 0; got -1.0``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
import sys
import types
import typing
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import (  # re-exported: the recipe's types are imported from here too
    ABSTAIN_ON,
    ARCHES,
    CHOICES,
    DEFAULT_WORDS,
    LEARNED_METHODS,
    MEMBER_KEYS,
    RANGES,
    SIZES,
    USED_BY,
    VOTE_METHODS,
    DataConfig,
    MemberConfig,
    Recipe,
    TrainConfig,
    VoteConfig,
    name_problem,
    recipe_dict,
)
from .errors import EnsembleError, one_of
from .labels import normalize_label

__all__ = ["ABSTAIN_ON", "ARCHES", "LEARNED_METHODS", "SIZES", "VOTE_METHODS", "DataConfig", "MemberConfig",
           "Recipe", "TrainConfig", "VoteConfig", "infer_arch", "load_recipe", "recipe_dict", "to_scratch",
           "train_config"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

def load_recipe(path: str | Path, overrides: list[str] | None = None, scratch: str | None = None) -> Recipe:
    """Read, override and validate a TOML recipe.

    Args:
        path: the recipe file; data paths inside it are relative to it.
        overrides: ``--set`` items like ``"members.bert.lr=3e-5"`` or ``"data.train=x.csv"``;
            values are TOML (``3e-5``, ``"x"``, ``[0.9, 0.98]``) or else a bare string; data
            paths given here are relative to the current directory.
        scratch: a size (e.g. ``"tiny"``) to turn every pretrained member into a scratch model of
            the same architecture, so any recipe runs offline.

    Example:
        >>> recipe = load_recipe("recipes/demo.toml", ["defaults.epochs=1"])  # doctest: +SKIP
        >>> [m.name for m in recipe.members]  # doctest: +SKIP
        ['albert', 'electra', 'roberta', 'bert']
    """
    path = Path(path)
    where = path.name
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.toml"))[:3]
        raise EnsembleError(f"recipe: '{path}' is a directory; give the recipe's TOML file"
                            + (f" (it holds {', '.join(found)})" if found else ""))
    if not path.is_file():
        raise EnsembleError(f"recipe: file not found: '{path}'")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise EnsembleError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise EnsembleError(f"{where}: TOML syntax error: {exc}") from None
    for item in overrides or []:
        _apply_override(raw, item)
    recipe = replace(_validate(raw, path.resolve().parent, where), file_name=path.name)
    if scratch is not None:
        recipe = to_scratch(recipe, scratch)
    return recipe


def train_config(values: dict, overrides: list[str] | None = None, where: str = "--set") -> TrainConfig:
    """A validated `TrainConfig` from `values` (e.g. a saved member's) and ``FIELD=VALUE`` overrides.

    Example:
        >>> train_config({"lr": 5e-5}, ["epochs=2"]).epochs
        2
    """
    values = dict(values)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise EnsembleError(f"{where}: expected FIELD=VALUE (e.g. lr=3e-5); got '{item}'")
        values[key.strip()] = _parse_value(text.strip())
    try:
        return _build(TrainConfig, values, "train", where)
    except EnsembleError as exc:  # FIELD=VALUE names the field alone: "--set: lr: ...", not "train.lr"
        raise EnsembleError(str(exc).replace(f"{where}: train.", f"{where}: ", 1)) from None


def to_scratch(recipe: Recipe, size: str) -> Recipe:
    """Replace every hub member by a scratch model of the same architecture and `size` (scratch
    members take that size too); members loaded from a local directory are kept as they are: they
    need no network, and replacing them would silently drop someone's checkpoint.

    Example:
        >>> recipe = load_recipe(Path(__file__).parents[2] / "recipes" / "project1.toml")  # hub members
        >>> [(m.name, m.init, m.arch, m.size) for m in to_scratch(recipe, "tiny").members][:2]
        [('albert', 'scratch', 'albert', 'tiny'), ('electra', 'scratch', 'electra', 'tiny')]
    """
    if size not in SIZES:
        raise EnsembleError(f"--scratch: must be one of {one_of(SIZES)}; got '{size}'")
    members = []
    for m in recipe.members:
        if m.init == "scratch":
            members.append(replace(m, size=size))
            continue
        if is_local(m.model or ""):
            members.append(m)
            continue
        arch = infer_arch(m.model or "")
        if arch is None:
            raise EnsembleError(
                f"--scratch: cannot tell the architecture of members[{m.name}].model = '{m.model}'; "
                f"give it init = \"scratch\" and arch = one of {one_of(ARCHES)}"
            )
        members.append(replace(m, init="scratch", arch=arch, size=size, model=None))
    return replace(recipe, members=tuple(members))


def is_local(model: str) -> bool:
    """Whether a member's `model` names a local directory rather than a hub id.

    Example:
        >>> is_local("./checkpoints/bert"), is_local("bert-base-uncased")
        (True, False)
    """
    return Path(model).expanduser().exists() or model.startswith((".", "/", "~"))


def infer_arch(model: str) -> str | None:
    """The architecture of a hub id or local directory, from its config or, failing that, its name.

    Example:
        >>> infer_arch("FacebookAI/roberta-base"), infer_arch("google/electra-small-discriminator"), infer_arch("gpt2")
        ('roberta', 'electra', None)
    """
    config = Path(model) / "config.json"
    if config.is_file():
        import json

        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "")
        except (ValueError, OSError):
            model_type = ""
        if model_type in ARCHES:
            return model_type
    name = model.lower().rsplit("/", 1)[-1]
    # roberta and albert contain "bert": test the longer names first
    for arch in ("roberta", "albert", "electra", "bert"):
        if arch in name:
            return arch
    return None


# ---------------------------------------------------------------- overrides (--set)

def _apply_override(raw: dict, item: str) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise EnsembleError(f"--set: expected KEY=VALUE (e.g. members.bert.lr=3e-5); got '{item}'")
    value = _parse_value(text.strip())
    parts = key.split(".")
    if parts[0] == "data" and len(parts) == 2 and parts[1] in ("train", "valid", "test") and isinstance(value, str) and value:
        value = str(Path(value).resolve())  # typed on the command line: relative to where it was typed
    if parts[0] == "members":
        if len(parts) != 3:
            raise EnsembleError(f"--set: member fields are set as members.NAME.FIELD; got '{key}'")
        members = raw.get("members", [])
        names = [m.get("name") for m in members if isinstance(m, dict)]
        if parts[1] not in names:
            raise EnsembleError(f"--set {key}: no member named '{parts[1]}'{_suggest(parts[1], names)}; members: {', '.join(map(str, names))}")
        members[names.index(parts[1])][parts[2]] = value
        return
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise EnsembleError(f"--set {key}: '{part}' is not a table")
        node = child
    node[parts[-1]] = value


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word such as cosine or data/train.csv


# ---------------------------------------------------------------- validation

def _validate(raw: dict, base: Path, where: str) -> Recipe:
    _check_keys(raw, ("data", "defaults", "members", "vote"), "", where)
    if "data" not in raw:
        raise EnsembleError(f"{where}: missing [data] table (with at least train = \"path\")")
    data_raw = dict(_table(raw, "data", where))
    if isinstance(data_raw.get("labels"), list):  # numbers and booleans are label names too: labels = [1, 2, 3]
        data_raw["labels"] = [normalize_label(v) if isinstance(v, bool | int | float) else v for v in data_raw["labels"]]
    data = _build(DataConfig, data_raw, "data", where)
    if data.labels is not None:
        data = replace(data, labels=_class_order(data.labels, where))
    data = replace(data, **{k: _path(getattr(data, k), base) for k in ("train", "valid", "test")})
    try:
        check_distinct_files(data)  # here, so the mistake is said before torch is imported
    except EnsembleError as exc:
        raise EnsembleError(f"{where}: {exc}") from exc
    named = [("text", data.text), ("text_pair", data.text_pair), ("label", data.label)]
    for i, (key, column) in enumerate(named):  # the label as a text would train on the answer
        for other, same in named[:i]:
            if column is not None and column == same:
                raise EnsembleError(f"{where}: data.{other} and data.{key} both name column '{column}'; each must "
                                    "name a different column")
    for key in _table(raw, "defaults", where).keys() & set(MEMBER_KEYS):
        raise EnsembleError(f"{where}: defaults.{key}: a member's own key, not a training field; set it in each "
                            "[[members]] table")
    defaults = _build(TrainConfig, _table(raw, "defaults", where), "defaults", where)

    raw_members = raw.get("members")
    if not isinstance(raw_members, list) or not raw_members:
        raise EnsembleError(f"{where}: no members; add at least one [[members]] table with a name")
    members: list[MemberConfig] = []
    for i, item in enumerate(raw_members):
        if not isinstance(item, dict):
            raise EnsembleError(f"{where}: members[{i}]: must be a table; got {item!r}")
        members.append(_member(item, i, defaults, base, where))
    names = [m.name for m in members]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise EnsembleError(f"{where}: members: duplicate name '{dupes[0]}'; every member needs its own name")

    vote = check_vote(_build(VoteConfig, _table(raw, "vote", where), "vote", where), names, where)
    _check_used(_table(raw, "defaults", where), raw_members, members, _table(raw, "vote", where), vote, where)
    return Recipe(path=base, data=data, defaults=defaults, members=tuple(members), vote=vote)


def check_distinct_files(data: DataConfig) -> None:
    """Refuse a ``valid`` or ``test`` file that is the ``train`` (or ``valid``) file: scores on
    rows the members trained or chose on would be optimistic.

    Example:
        >>> check_distinct_files(DataConfig(train="a.csv", test="./a.csv"))
        Traceback (most recent call last):
        ...
        ensemble.errors.EnsembleError: data.test: is the data.train file ('./a.csv'); scores on rows the members trained on would be optimistic: give a separate file, or leave data.test out
    """
    files = {name: Path(path).resolve() for name in ("train", "valid", "test") if (path := getattr(data, name)) is not None}

    def same(a: Path, b: Path) -> bool:  # a hard link too, where both exist
        return a == b or (a.is_file() and b.is_file() and os.path.samefile(a, b))

    for later, earlier in (("valid", "train"), ("test", "train"), ("test", "valid")):
        if later in files and earlier in files and same(files[earlier], files[later]):
            raise EnsembleError(f"data.{later}: is the data.{earlier} file ('{getattr(data, later)}'); scores on rows the "
                                f"members {'trained' if earlier == 'train' else 'chose their epoch and vote'} on "
                                f"would be optimistic: give a separate file, or leave data.{later} out")


def _class_order(given: tuple[str, ...], where: str) -> tuple[str, ...]:
    """`data.labels` as label names (normalised as the files' labels are), checked: two or more,
    none empty, none twice."""
    labels = tuple(normalize_label(v) for v in given)
    if any(v is None for v in labels):
        raise EnsembleError(f"{where}: data.labels: holds an empty name; list the class names, e.g. [\"low\", \"high\"]")
    twice = sorted({v for v in labels if labels.count(v) > 1})
    if twice:
        raise EnsembleError(f"{where}: data.labels: '{twice[0]}' is listed twice; list each class once")
    if len(labels) < 2:
        raise EnsembleError(f"{where}: data.labels: a classifier needs at least two classes; got {list(labels)}")
    return labels


def check_vote(vote: VoteConfig, names: list[str], where: str) -> VoteConfig:
    """`vote` checked as a recipe's [vote] is, for members `names`: types and ranges (a
    VoteConfig built in Python is checked here), weights naming members, one abstention rule.

    Example:
        >>> check_vote(VoteConfig("hard", weights={"bert": 2}), ["bert", "roberta"], "fit_vote").weights
        {'bert': 2.0}
    """
    if not isinstance(vote, VoteConfig):
        raise EnsembleError(f"{where}: the 'vote' parameter must be a VoteConfig, e.g. VoteConfig('weighted'); "
                            f"got {type(vote).__name__}")
    vote = _build(VoteConfig, {f.name: getattr(vote, f.name) for f in fields(VoteConfig)}, "vote", where)
    for name, weight in vote.weights.items():
        if name not in names:
            raise EnsembleError(f"{where}: vote.weights.{name}: no member named '{name}'{_suggest(name, names)}; members: {', '.join(names)}")
        if not (math.isfinite(weight) and weight >= 0):
            raise EnsembleError(f"{where}: vote.weights.{name}: must be a finite number >= 0; got {weight!r}")
    if vote.weights and not any(vote.weights.get(n, 1.0) > 0 for n in names):
        raise EnsembleError(f"{where}: vote.weights: at least one member needs a weight > 0")
    if vote.weights and vote.method in LEARNED_METHODS:
        raise EnsembleError(f"{where}: vote.weights: method '{vote.method}' learns its own weights on the "
                            "validation split; remove [vote.weights] or use method = \"soft\" or \"hard\"")
    given = [k for k in ("abstain_below", "abstain_coverage", "abstain_accuracy") if getattr(vote, k) is not None]
    if len(given) > 1:
        raise EnsembleError(f"{where}: vote: set at most one of abstain_below, abstain_coverage, abstain_accuracy; "
                            f"got {' and '.join(given)}")
    return vote


def abstention_key(vote: VoteConfig) -> str | None:
    """The ``[vote]`` key that asks for abstention (``vote.abstain_coverage``), or None.

    Example:
        >>> abstention_key(VoteConfig(abstain_coverage=0.9)), abstention_key(VoteConfig())
        ('vote.abstain_coverage', None)
    """
    key = next((k for k in ("abstain_below", "abstain_coverage", "abstain_accuracy") if getattr(vote, k) is not None), None)
    return None if key is None else f"vote.{key}"


def unused_setting(where: str, path: str, key: str, situation: str) -> EnsembleError:
    """The error for setting `key` (at `path`) that no choice in `situation` reads (see `USED_BY`).

    Example:
        >>> str(unused_setting("--set", "momentum", "momentum", "the student uses 'adamw'"))
        "--set: momentum: only optimizer 'rmsprop' or 'sgd' reads it, and the student uses 'adamw'; remove it"
    """
    chooser, users = USED_BY[key]
    readers = " or ".join(f"'{c}'" for c in users)
    return EnsembleError(f"{where}: {path}: only {chooser} {readers} reads it, and {situation}; remove it")


def _check_used(defaults: dict, raw_members: list[dict], members: list[MemberConfig], vote_raw: dict,
                vote: VoteConfig, where: str) -> None:
    """Refuse a setting that nothing reads: one that a member's own optimizer or scheduler, or the
    vote's method, ignores, or a [defaults] one that no member's choices read."""
    def unused(path: str, key: str, situation: str) -> EnsembleError:
        return unused_setting(where, path, key, situation)

    for item, member in zip(raw_members, members, strict=True):
        for key in sorted(item.keys() & USED_BY.keys()):
            choice = getattr(member.train, USED_BY[key][0])
            if choice not in USED_BY[key][1]:
                raise unused(f"members[{member.name}].{key}", key, f"this member uses '{choice}'")
    for key in sorted(defaults.keys() & USED_BY.keys()):
        choices = sorted({getattr(m.train, USED_BY[key][0]) for m in members})
        if not set(choices) & set(USED_BY[key][1]):
            raise unused(f"defaults.{key}", key, f"the members use {', '.join(map(repr, choices))}")
    for key in sorted(vote_raw.keys() & USED_BY.keys()):
        if vote.method not in USED_BY[key][1]:
            raise unused(f"vote.{key}", key, f"the vote uses '{vote.method}'")


def _member(item: dict, index: int, defaults: TrainConfig, base: Path, where: str) -> MemberConfig:
    name = item.get("name")
    label = f"members[{name}]" if isinstance(name, str) and name else f"members[{index}]"
    allowed = MEMBER_KEYS + tuple(f.name for f in fields(TrainConfig))
    _check_keys(item, allowed, label + ".", where)
    problem = name_problem(name)
    if problem:
        raise EnsembleError(f"{where}: {label}.name: {problem}")
    own = {k: v for k, v in item.items() if k in MEMBER_KEYS}
    train_raw = {k: v for k, v in item.items() if k not in MEMBER_KEYS}
    train = _build(TrainConfig, {**dataclasses.asdict(defaults), **train_raw}, label, where)
    member = _build(MemberConfig, {**own, "train": train}, label, where)
    if member.init == "scratch":
        if member.arch is None:
            raise EnsembleError(f"{where}: {label}.arch: a scratch member needs arch = one of {one_of(ARCHES)}")
        if member.model:
            raise EnsembleError(f"{where}: {label}.model: a scratch member is built from arch and size, not from a "
                                f"model; remove model, or remove init = \"scratch\" to fine-tune '{member.model}'")
    elif "arch" in own or "size" in own:
        key = "arch" if "arch" in own else "size"
        raise EnsembleError(f"{where}: {label}.{key}: only a scratch member (init = \"scratch\") has an arch and a "
                            f"size; a pretrained member takes both from its model: remove {key}")
    elif not member.model:
        raise EnsembleError(f"{where}: {label}.model: give a hub id or a local directory, or set init = \"scratch\" with an arch")
    elif (base / member.model).is_dir():  # a local directory, relative to the recipe
        member = replace(member, model=str((base / member.model).resolve()))
    return member


def _build(cls: type, values: dict, prefix: str, where: str):
    """Type- and range-check `values` against the dataclass `cls` and construct it."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    _check_keys(values, tuple(known), prefix + ".", where)
    kwargs = {}
    for name, value in values.items():
        path = f"{prefix}.{name}"
        if name in DEFAULT_WORDS and isinstance(value, str):
            if value != DEFAULT_WORDS[name]:
                kind = "an integer" if name != "dropout" else "a number"
                raise EnsembleError(f"{where}: {path}: must be {kind} or \"{DEFAULT_WORDS[name]}\"; got {value!r}")
            value = None
        value = _coerce(value, hints[name], path, where)
        for item in value if isinstance(value, tuple) and name in CHOICES else [value]:
            if name in CHOICES and item is not None and item not in CHOICES[name]:
                raise EnsembleError(f"{where}: {path}: must be one of {one_of(CHOICES[name])}; got {item!r}{_suggest(str(item), CHOICES[name])}")
        if name in RANGES and isinstance(value, (int, float)) and not isinstance(value, bool):
            _check_range(value, RANGES[name], path, where)
        kwargs[name] = value
    missing = [f.name for f in fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise EnsembleError(f"{where}: {prefix}.{missing[0]}: required field is missing")
    obj = cls(**kwargs)
    if isinstance(obj, TrainConfig):
        _check_train(obj, prefix, where)
    return obj


def _check_train(cfg: TrainConfig, prefix: str, where: str) -> None:
    if cfg.batch_size % cfg.grad_accum:
        raise EnsembleError(
            f"{where}: {prefix}.grad_accum: batch_size ({cfg.batch_size}) must be a multiple of grad_accum; got {cfg.grad_accum}"
        )
    if not all(0 <= b < 1 for b in cfg.betas):
        raise EnsembleError(f"{where}: {prefix}.betas: both must be in [0, 1); got {list(cfg.betas)}")


def _coerce(value: Any, hint: Any, path: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path, where)
    if hint is Path and value == "":
        raise EnsembleError(f"{where}: {path}: is empty; give a file path, or leave {path} out")
    if hint in SCALARS:
        expected, accepts, convert = SCALARS[hint]
        if not accepts(value):
            raise _type_error(path, expected, value, where)
        if hint is float and not math.isfinite(value):
            raise _type_error(path, "a finite number", value, where)
        return convert(value)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, args[0], f"{path}[{i}]", where) for i, v in enumerate(value))
        raise _type_error(path, "a list of strings", value, where)
    if origin is tuple:
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(v, a, f"{path}[{i}]", where) for i, (v, a) in enumerate(zip(value, args)))
        raise _type_error(path, f"a list of {len(args)} numbers", value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(path, "a table of member name = number", value, where)
        return {str(k): _coerce(v, args[1], f"{path}.{k}", where) for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(value, hint):
        return value
    raise _type_error(path, str(hint), value, where)  # pragma: no cover - schema bug


# What a scalar field accepts: (description, test, conversion). bool is not an int here.
SCALARS: dict[type, tuple[str, typing.Callable[[Any], bool], typing.Callable[[Any], Any]]] = {
    Path: ("a path (string)", lambda v: isinstance(v, str) and bool(v), Path),
    bool: ("true or false", lambda v: isinstance(v, bool), bool),
    int: ("an integer", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)), int),
    float: ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)), float),
    str: ("a string", lambda v: isinstance(v, str), str),
}


def _check_range(value: float, bounds: tuple, path: str, where: str) -> None:
    low, high, inclusive, *rest = bounds
    high_inclusive = rest[0] if rest else True
    ok = (value >= low if inclusive else value > low) and (value <= high if high_inclusive else value < high)
    if not ok:
        rule = f"{'>=' if inclusive else '>'} {_bound(low)} and {'<=' if high_inclusive else '<'} {_bound(high)}"
        raise EnsembleError(f"{where}: {path}: must be {rule}; got {value!r}")


def _bound(value: float) -> str:
    """A range's bound as written: whole numbers in full (4294967295, not 4.29497e+09)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _check_keys(table: dict, allowed: tuple[str, ...], prefix: str, where: str) -> None:
    for key in table:
        if key not in allowed:
            raise EnsembleError(f"{where}: {prefix}{key}: unknown key{_suggest(key, allowed)}; allowed: {', '.join(sorted(allowed))}")


def _table(raw: dict, name: str, where: str) -> dict:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise EnsembleError(f"{where}: {name}: must be a table ([{name}]); got {value!r}")
    return value


def _path(value: Path | None, base: Path) -> Path | None:
    return None if value is None else (base / value)


def _type_error(path: str, expected: str, value: Any, where: str) -> EnsembleError:
    return EnsembleError(f"{where}: {path}: must be {expected}; got {value!r} ({type(value).__name__})")


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""

