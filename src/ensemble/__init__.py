"""ensemble: fine-tune transformer text classifiers from one TOML recipe, vote them, report agreement.

Example:
    >>> from ensemble import Ensemble
    >>> Ensemble.load("runs/demo").predict(["the story is gripping."])  # doctest: +SKIP
    ['positive']
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from .errors import EnsembleError

if TYPE_CHECKING:
    from .aggregate import Vote, aggregate
    from .ensemble import Ensemble

__all__ = ["Ensemble", "EnsembleError", "Vote", "aggregate"]
__version__ = "0.1.0"

# Imported on first use (PEP 562): torch, transformers and scikit-learn take ~2 s to import, which
# `ensemble --help`, a recipe typo's one-line error and the worker processes of `fit` need not wait for.
_LAZY = {"Ensemble": "ensemble", "Vote": "aggregate", "aggregate": "aggregate"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'ensemble' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The API and the submodules loaded so far (not this file's own imports)."""
    loaded = {name for name, value in globals().items()
              if isinstance(value, types.ModuleType) and value.__name__.startswith(f"{__name__}.")}
    return sorted({*__all__, "__version__", *loaded})


class _Package(types.ModuleType):
    """Keeps ``ensemble.aggregate`` the function. Python binds a submodule to its package's
    attribute when it first loads it, and `ensemble.aggregate` (the module) is often loaded first
    by another module; eager imports used to rebind the name right after, this does it lazily."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType) and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
