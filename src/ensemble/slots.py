"""Where members train side by side: the worker slots (GPUs, or shares of the CPU threads) and
the order members are handed out, largest first (`workers`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import EnsembleError
from .members import member_shape
from .recipe import MemberConfig

BYTES_PER_PARAMETER = 20  # fp32 weights, gradients, two AdamW moments, the best epoch's copy
PROCESS_BYTES = 1 << 30  # a worker's runtime and activations, beyond its parameters (generous)
MEMINFO = "/proc/meminfo"


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: its description and the environment that puts it there."""

    label: str  # "cuda:1", "1 CPU thread"
    env: dict[str, str]
    threads: int = 0  # CPU threads of a CPU slot; 0 for a GPU (or this process)


def parse_workers(value: str) -> str | int:
    """`--concurrent` as typed: "auto" or a whole number >= 1.

    Example:
        >>> parse_workers("auto"), parse_workers("2")
        ('auto', 2)
    """
    text = value.strip()
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise EnsembleError(f"--concurrent: must be 'auto' or a whole number >= 1; got '{value}'")
    return int(text)


def plan(workers: str | int, members: list[MemberConfig]) -> list[Slot]:
    """The worker slots for `workers` ("auto" or a count); a single slot means: train in this process.

    "auto" runs one worker per GPU when there are several GPUs, and without GPUs one worker per
    CPU thread of this process's budget (``torch.get_num_threads()``, which OMP_NUM_THREADS sets),
    as many as there are members and as fit in the available memory. A count runs that many
    workers, sharing the GPUs round robin or splitting the threads evenly.

    Example:
        >>> [s.label for s in plan(2, members)]  # doctest: +SKIP
        ['1 CPU thread', '1 CPU thread']
    """
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # under accelerate launch / torchrun each member trains data-parallel instead
        if workers not in ("auto", 1):
            raise EnsembleError(f"--concurrent: {workers} workers cannot run inside a distributed launch "
                                f"({world} processes); drop --concurrent: each member then trains data-parallel")
        return [Slot("this process", {})]
    gpus = torch.cuda.device_count()
    threads = torch.get_num_threads()
    n = min(len(members), workers if workers != "auto" else gpus or min(threads, _fits_in_memory(members)))
    if n <= 1:
        return [Slot("this process", {})]
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(gpus)]
        return [Slot(f"cuda:{ids[k % gpus]}", {"CUDA_VISIBLE_DEVICES": ids[k % gpus]}) for k in range(n)]
    return [Slot(threads_label(t), {"OMP_NUM_THREADS": str(t), "MKL_NUM_THREADS": str(t)}, t)
            for t in split_threads(threads, n)]


def split_threads(threads: int, workers: int) -> list[int]:
    """`threads` shared by `workers`, the leftover to the first ones, at least one each.

    Example:
        >>> split_threads(8, 3)
        [3, 3, 2]
    """
    return [max(1, threads // workers + (k < threads % workers)) for k in range(workers)]


def threads_label(threads: int) -> str:
    return f"{threads} CPU thread{'s' if threads > 1 else ''}"


def _fits_in_memory(members: list[MemberConfig]) -> int:
    """How many of the largest member can train at once in the available memory (Linux; else no limit)."""
    try:
        with open(MEMINFO, encoding="ascii") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return len(members)
    largest = max(_parameters(m) for m in members)
    return max(1, int(0.8 * available // (BYTES_PER_PARAMETER * largest + PROCESS_BYTES)))


def _parameters(m: MemberConfig) -> int:
    layers, hidden, inter, vocab = member_shape(m)
    return vocab * hidden + layers * (4 * hidden * hidden + 2 * hidden * inter)


def work(m: MemberConfig) -> float:
    """Relative training work of a member per training row: epochs x encoder FLOPs per token."""
    layers, hidden, inter, _ = member_shape(m)
    return m.train.epochs * layers * (4 * hidden * hidden + 2 * hidden * inter)
