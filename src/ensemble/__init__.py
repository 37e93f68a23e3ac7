"""ensemble: fine-tune transformer text classifiers from one TOML recipe, vote them, report agreement.

Example:
    >>> from ensemble import Ensemble
    >>> Ensemble.load("runs/demo").predict(["what a wonderful film"])  # doctest: +SKIP
    ['positive']
"""

from .aggregate import Vote, aggregate
from .ensemble import Ensemble
from .errors import EnsembleError

__all__ = ["Ensemble", "EnsembleError", "Vote", "aggregate"]
__version__ = "0.1.0"
