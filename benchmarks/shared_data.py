"""Where the benchmarks read ../shared/data: beside the checkout, or where $ENSEMBLE_DATA points.

The override is for machines that get the repository but not its neighbours, e.g. the GPU
device: copy the few CSV files a benchmark reads into a folder that git ignores, send it along,
and run with ``ENSEMBLE_DATA=that/folder`` (the folder that holds ``cs224n/``).
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def cs224n() -> Path:
    """The folder of the SST, CFIMDB, Quora and STS CSV files.

    Example:
        >>> cs224n().name
        'cs224n'
    """
    return Path(os.environ.get("ENSEMBLE_DATA", CHECKOUT.parent / "shared" / "data")) / "cs224n"
