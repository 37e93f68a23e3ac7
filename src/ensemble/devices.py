"""Where members run and in what arithmetic: device lists, prediction precision, bf16 support.

Validated before any member loads, so a wrong ``--device`` or ``--precision`` is a one-line error
instead of a failure halfway through loading weights.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .errors import EnsembleError, one_of
from .recipe import MemberConfig

PREDICT_PRECISIONS = ("auto", "fp32", "bf16")  # prediction arithmetic; "auto": bf16 autocast on GPUs, fp32 on CPUs


def check_devices(device: str | Sequence[str], name: str = "device") -> list[str]:
    """The devices to spread members over: ``"auto"`` (every GPU, else the CPU), one device or a list;
    `name` is what an error calls the setting (``"--device"`` on the command line).

    Example:
        >>> check_devices("cpu")
        ['cpu']
    """
    if device == "auto":
        count = torch.cuda.device_count()
        devices = [f"cuda:{i}" for i in range(count)] if count else ["cpu"]
    elif isinstance(device, (str, torch.device)):
        devices = [str(device)]
    elif isinstance(device, (list, tuple)) and device:
        devices = [str(d) for d in device]
    else:
        raise EnsembleError(f"{name}: must be 'auto', 'cpu', 'cuda[:N]' or a non-empty list of them; got {device!r}")
    for d in devices:
        kind, _, index = str(d).partition(":")
        ok = (kind == "cpu" and not index) or (
            kind == "cuda" and (not index or index.isdigit()) and int(index or 0) < torch.cuda.device_count())
        if not ok:
            raise EnsembleError(f"{name}: must be 'auto', 'cpu' or 'cuda[:N]' with N below the number of GPUs "
                                f"({torch.cuda.device_count()}); got '{d}'")
    return devices


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_precision(precision: str) -> str:
    """Validate a prediction precision: ``"auto"`` (bf16 autocast on GPUs, float32 on CPUs),
    ``"fp32"`` or ``"bf16"`` (autocast on any device).

    bf16 on a CPU pays off where the CPU computes in bf16 natively (AMX: Intel Xeon 4th
    generation "Sapphire Rapids" and later): 2.2x the rows/s of float32 for four MiniLM / BERT-mini
    members there (`benchmarks/predict.py`). Labels can then differ from float32 ones on near-ties.
    Elsewhere bf16 is emulated and slower, which this warns about.

    Example:
        >>> check_precision("bf16")
        'bf16'
    """
    if precision not in PREDICT_PRECISIONS:
        raise EnsembleError(f"the 'precision' parameter must be one of {one_of(PREDICT_PRECISIONS)}; got {precision!r}")
    if precision == "bf16" and not torch.cuda.is_available() and not cpu_has_bf16():
        warnings.warn("precision 'bf16': this CPU has no native bf16 arithmetic (AMX or AVX512-BF16), so bf16 "
                      "prediction is emulated and likely slower than 'fp32'", stacklevel=2)
    return precision


def check_mixed_precision(cfg: MemberConfig) -> None:
    """Refuse a member's mixed precision that this machine cannot train in (fp16 needs a GPU).

    Example:
        >>> check_mixed_precision(MemberConfig("bert", init="scratch", arch="bert"))  # float32: fine anywhere
    """
    if cfg.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise EnsembleError(f"members[{cfg.name}].mixed_precision: fp16 needs a GPU; use \"bf16\" or \"no\" on CPU")


def warn_emulated_bf16(members: Iterable[MemberConfig]) -> None:
    """Warn when members would train in bf16 on a CPU that only emulates bf16 arithmetic.

    There every bf16 matmul is converted and computed in float32 piece by piece: a MiniLM-L6
    step (batch 16 x 32 tokens, 2 threads) took 7.5 s in bf16 against 0.31 s in float32 on a
    2-core AMD EPYC (AVX2), 24x slower, with no gain in accuracy to show for it.

    Example:
        >>> warn_emulated_bf16([MemberConfig("bert", init="scratch", arch="bert")])  # float32: nothing to say
    """
    names = [m.name for m in members if m.train.mixed_precision == "bf16"]
    if names and not torch.cuda.is_available() and not cpu_has_bf16():
        warnings.warn(f"mixed_precision = \"bf16\" ({', '.join(names)}): this CPU has no native bf16 arithmetic "
                      f"(AMX or AVX512-BF16), so bf16 training is emulated, about 24x slower than float32 for "
                      f"MiniLM; set mixed_precision = \"no\" to train in float32", stacklevel=2)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX tiles or AVX512-BF16)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(probe() for probe in probes if probe is not None)


def bf16_tip(members: Iterable[MemberConfig]) -> str | None:
    """A one-line tip when members would train in float32 on a CPU that computes bf16 natively.

    Only members of MiniLM-L6's size and up count (pretrained ones, scratch from "small"): tiny
    models spend their time outside the matmuls, and the demo's tiny and mini members train no
    faster in bf16.

    Example:
        >>> bf16_tip([])  # no member in float32: nothing to say
    """
    names = [m.name for m in members if m.train.mixed_precision == "no"
             and (m.init != "scratch" or m.size not in ("tiny", "mini"))]
    if not names or torch.cuda.is_available() or not cpu_has_bf16():
        return None
    return (f"tip: this CPU computes bf16 natively (AMX / AVX512-BF16); mixed_precision = \"bf16\" trained "
            f"1.25-1.6x faster at the same accuracy in benchmarks/train.py (in float32 here: {', '.join(names)})")
