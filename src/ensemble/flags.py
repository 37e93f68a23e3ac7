"""Command-line flag values, parsed and checked for `cli`: ``--members NAME=DIR``, ``--weights
NAME=NUMBER``, ``--precision``, ``--out`` against the directories a command reads, the data columns
and quoting (the flags, else the members' own), several values after one flag, and close matches
for a mistyped flag. Each mistake is one `EnsembleError` naming
the flag, the value and the fix.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path

from .config import QUOTINGS, name_problem
from .errors import EnsembleError, one_of

# Options that take several values after one flag (`--members a b c`), as the README shows them.
MULTI_VALUE = ("--members", "--weights", "--set", "--keep-columns")


def expand_multi(args: list[str]) -> list[str]:
    """`--members a b c` -> `--members a --members b --members c` (click wants the flag repeated);
    ``--keep-columns=id note`` too. Such a flag with no value before the next flag is refused
    (click would take the next flag as its value, and complain about what follows).

    Example:
        >>> expand_multi(["vote", "--members", "a", "b", "--out", "o", "--keep-columns=id", "x"])
        ['vote', '--members', 'a', '--members', 'b', '--out', 'o', '--keep-columns=id', '--keep-columns', 'x']
        >>> expand_multi(["predict", "--keep-columns", "--quiet"])
        Traceback (most recent call last):
        ensemble.errors.EnsembleError: --keep-columns: needs at least one value; got none before --quiet
    """
    result, current = [], None
    for arg in args:
        if arg.startswith("-"):
            if current is not None and result[-1] == current:
                raise EnsembleError(f"{current.rstrip('=')}: needs at least one value; got none before {arg}")
            name = arg.split("=", 1)[0]
            current = name if name in MULTI_VALUE else None
            if current is not None and name != arg:
                arg, current = arg, name + "="  # a value came with the flag: the next bare words add to it
            result.append(arg)
        elif current and result[-1] != current:
            result += [current.rstrip("="), arg]
        else:
            result.append(arg)
    if current is not None and result[-1] == current:
        raise EnsembleError(f"{current.rstrip('=')}: needs at least one value; got none")
    return result


def not_over_inputs(out: Path, inputs: dict[str, Path], nested_ok: tuple[str, ...] = (), holds_ok: bool = False) -> None:
    """Refuse an --out that would write over what the command reads: one of the `inputs` (files or
    directories, keyed by how the message names them, e.g. "--data file"), a directory holding
    one, or a path inside an input directory (allowed for the keys in `nested_ok` while the
    path does not exist yet: a new file in a run directory harms nothing). With `holds_ok` an
    --out may hold inputs (a command that adds to its directory and deletes nothing else). Also
    an --out that cannot be created because a part of its path is a file.

    Example:
        >>> not_over_inputs(Path("runs"), {"--ensemble directory": Path("runs/e")})
        Traceback (most recent call last):
        ensemble.errors.EnsembleError: --out: 'runs' holds the --ensemble directory ('runs/e'), which this command reads; choose another --out
    """
    target = out.resolve()
    for what, path in inputs.items():
        source = Path(path).resolve()
        if source == target:
            relation = "is"
        elif target in source.parents and not holds_ok:
            relation = "holds"
        elif source in target.parents and source.is_dir() and not (what in nested_ok and not target.exists()):
            relation = "is inside"
        else:
            continue
        raise EnsembleError(f"--out: '{out}' {relation} the {what} ('{path}'), which this command reads; "
                            "choose another --out")
    for parent in target.parents:
        if parent.exists() and not parent.is_dir():
            raise EnsembleError(f"--out: '{out}' cannot be created: '{parent}' is a file, not a directory; "
                                "choose another --out")


def check_bad_rows(on_bad_rows: str) -> None:
    """Refuse an --on-bad-rows outside `config.BAD_ROWS`.

    Example:
        >>> check_bad_rows("drop")
        Traceback (most recent call last):
        ensemble.errors.EnsembleError: --on-bad-rows: must be one of {'error', 'skip'}; got 'drop'
    """
    from .config import BAD_ROWS

    if on_bad_rows not in BAD_ROWS:
        raise EnsembleError(f"--on-bad-rows: must be one of {one_of(BAD_ROWS)}; got '{on_bad_rows}'")


def check_precision(precision: str) -> None:
    """Refuse a --precision outside `devices.PREDICT_PRECISIONS` (`devices.check_precision`, which
    `Ensemble.load` calls, also warns where bf16 is emulated: once, there).

    Example:
        >>> check_precision("fp16")
        Traceback (most recent call last):
        ensemble.errors.EnsembleError: --precision: must be one of {'auto', 'fp32', 'bf16'}; got 'fp16'
    """
    from .devices import PREDICT_PRECISIONS

    if precision not in PREDICT_PRECISIONS:
        raise EnsembleError(f"--precision: must be one of {one_of(PREDICT_PRECISIONS)}; got '{precision}'")


def named_dirs(items: list[str]) -> dict[str, Path]:
    """--members items (NAME=DIR, or DIR named after its last part) as {name: directory}.

    Example:
        >>> named_dirs(["runs/x/bert", "big=runs/y/bert"])
        {'bert': PosixPath('runs/x/bert'), 'big': PosixPath('runs/y/bert')}
    """
    dirs: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name, path = (name, path) if sep else (Path(item).name, item)
        if name in dirs:
            raise EnsembleError(f"--members: two members are named '{name}'; give each its own name (NAME=DIR)")
        problem = name_problem(name)
        if problem:
            how = "choose another NAME in NAME=DIR" if sep else "name it: NAME=DIR"
            raise EnsembleError(f"--members: '{item}': bad member name: {problem}; {how}")
        dirs[name] = Path(path)
    return dirs


def weights_by_name(items: list[str], members: dict[str, Path]) -> dict[str, float]:
    """--weights NAME=NUMBER items, checked against the --members names.

    Example:
        >>> weights_by_name(["bert=2"], {"bert": Path("b"), "albert": Path("a")})
        {'bert': 2.0}
    """
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        if sep and name in weights:
            raise EnsembleError(f"--weights: '{name}' is given twice ({weights[name]:g} and {value}); give each member "
                                "one weight")
        try:
            weights[name] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise EnsembleError(f"--weights: expected NAME=NUMBER (e.g. bert=2); got '{item}'")
        if name not in members:
            raise EnsembleError(f"--weights: no member named '{name}'; members: {', '.join(members)}")
        if not (math.isfinite(weights[name]) and weights[name] >= 0):
            raise EnsembleError(f"--weights: {name}'s weight must be a finite number >= 0; got '{value}'")
    if weights and not any({**dict.fromkeys(members, 1.0), **weights}.values()):
        raise EnsembleError("--weights: at least one member needs a weight > 0")
    return weights


def as_flags(exc: EnsembleError, *settings: str) -> EnsembleError:
    """`exc` with the library's setting names (abstain_coverage) spelled as this command's flags
    (--abstain-coverage), so that the message names what the user typed.

    Example:
        >>> str(as_flags(EnsembleError("abstain_coverage must be in (0, 1]"), "abstain_coverage"))
        '--abstain-coverage must be in (0, 1]'
    """
    message = str(exc)
    for name in settings:
        message = re.sub(rf"(?<![\w.-]){name}\b", "--" + name.replace("_", "-"), message)
    return EnsembleError(message)


def unknown_option(exc, ctx) -> str | None:
    """"No such option: --x", suggesting a flag only when its name (without the dashes) is close:
    click compares with the dashes and offers --out for --quiet."""
    name = getattr(exc, "option_name", None)
    if type(exc).__name__ != "NoSuchOption" or not name or ctx is None:
        return None
    flags = [o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
    close = difflib.get_close_matches(name.lstrip("-"), [f.lstrip("-") for f in flags], n=1, cutoff=0.6)
    return f"No such option: {name}" + (f" (did you mean --{close[0]}?)" if close else "")


def given_value(exc, args: list[str]) -> str:
    """``"; got 'abc'"`` for a flag whose value click refused (its message leaves the value out),
    read back from the command line; "" when it cannot be found.

    Example:
        >>> class Bad: param = type("P", (), {"opts": ["--chunk-rows"]})()
        >>> given_value(Bad(), ["predict", "--chunk-rows", "0"])
        "; got '0'"
    """
    param = getattr(exc, "param", None)
    opts = [o for o in getattr(param, "opts", []) if o.startswith("-")]
    for k, arg in enumerate(args):
        for opt in opts:
            if arg == opt and k + 1 < len(args):
                return f"; got {args[k + 1]!r}"
            if arg.startswith(opt + "="):
                return f"; got {arg[len(opt) + 1:]!r}"
    return ""


def data_columns(ens, text: str | None, text_pair: str | None, label: str | None) -> tuple[str, str | None, str | None]:
    """Data columns: the flags, else what the members were trained with, else text / label;
    ``--label ""`` reads no gold labels (label None). Members trained on different columns need the flag.

    Example:
        >>> data_columns(Ensemble.load("runs/rte"), None, None, "")  # doctest: +SKIP
        ('sentence1', 'sentence2', None)
    """
    if text_pair is not None and not ens.text_pair:
        raise EnsembleError(f"--text-pair: these members were trained on single texts, not pairs; drop --text-pair '{text_pair}'")
    recorded, differing = ens.data_columns(), ens.differing_columns()
    for flag, key, given in (("--text", "text", text), ("--text-pair", "text_pair", text_pair), ("--label", "label", label)):
        if given is not None and not given.strip() and key != "label":
            raise EnsembleError(f"{flag}: is empty; give the column's name, or leave {flag} out")
        if given is None and (values := differing.get(key)):  # no one default fits them all
            listed = ", ".join(f"{name}: '{value}'" for name, value in values.items())
            raise EnsembleError(f"{flag}: the members were trained on different {key.replace('_', ' ')} columns "
                                f"({listed}); name the --data file's column with {flag}")
    if label is not None and not label.strip():  # asked for: no gold labels, whatever the file holds
        return text or recorded.get("text") or "text", text_pair or recorded.get("text_pair"), None
    return (text or recorded.get("text") or "text", text_pair or recorded.get("text_pair"),
            label or recorded.get("label") or "label")


def quoting_of(ens, quoting: str | None) -> str:
    """--quoting as given (checked), else what the members' recipe read their files with, else "none".

    Example:
        >>> quoting_of(Ensemble.load("runs/quora"), None)  # doctest: +SKIP
        'csv'
    """
    if quoting is not None and quoting not in QUOTINGS:
        raise EnsembleError(f"--quoting: must be one of {one_of(QUOTINGS)}; got '{quoting}'")
    recorded = ens.data_columns().get("quoting")
    if quoting is None and (values := ens.differing_columns().get("quoting")):
        listed = ", ".join(f"{name}: '{value}'" for name, value in values.items())
        raise EnsembleError(f"--quoting: the members read their files with different quoting ({listed}); "
                            "say how to read the --data file with --quoting")
    return quoting or (recorded if recorded in QUOTINGS else "none")
