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


def cpu() -> str:
    """The CPU's model name and LLVM's name for it, for a saved run to say which machine made it.

    VMs of one name differ (an "AMD EPYC" has been a Zen 3, 4 or 5), and the vote kernels pick
    their vector widths by LLVM's name.

    Example:
        >>> isinstance(cpu(), str)
        True
    """
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:  # not Linux
        pass
    try:
        from llvmlite import binding
        return f"{model or 'unknown'} ({binding.get_host_cpu_name()})"
    except ImportError:  # llvmlite comes with numba, a dependency
        return model or "unknown"
