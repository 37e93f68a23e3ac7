"""The fused CPU vote: one parallel pass over the logits, every output written once.

Eager torch needs a dozen passes for a vote, and its reductions over a small class dimension
are slow (a softmax over 5 classes costs ten times an `exp` of the same tensor). Two numba
kernels, chosen by `row_lanes` from the class count (and the CPU's vector width), compute the
same outputs with the same tie-breaks; `fused_vote` runs one of them:

- `kernels_cpu_tiles.vote_tiles` walks the rows in tiles with class-major scratch sums, so that
  every step runs along rows and vectorises. At 2-8 classes a member's vote on 16 rows is one
  `simd.group_vote` (one wide load shuffled into a vector per class, all in registers); above,
  a transposing copy and loops. Best at 2-8 classes (2-5 for probabilities on CPUs without
  AVX-512 and on Zen 4).
- `kernels_cpu_rows.vote_rows` keeps each row of a member as one vector of 8, 16 or 32 lanes
  (`simd`): no transpose, the reductions over a row's classes are shuffle trees, and it
  prefetches ahead. Best from 9 classes on AVX-512 CPUs, from 6 (probabilities) on the others.

From that one read come the member argmax and confidence, the temperature softmax (through
`simd.exp`, a branch-free float32 exp that vectorises: numba has no vector `exp` without Intel's
SVML), weighted soft scores, hard vote shares, the tie-broken label, agreement and the member x
member equal-prediction counts (one partial table per thread block, summed at the end; 64 rows
per popcount of a word of equal-label bits, which made 16-member votes 1.33x (two classes) and
1.09x (five) faster than a compare-and-add per row; labels are kept as int16 so that a 64-row
compare is two AVX-512 loads, not four). This module holds what both kernels share.

It follows `aggregate`'s tie-breaking rules exactly: sums run in member order and identical
inputs go through identical float32 arithmetic, so they tie exactly.

Bytes per row: read members*classes*itemsize; write classes*4 (scores) + 8 (label) +
4 (confidence) + 4 (agreement) + members*(8 + 4) (member labels and confidences; only with
member details).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from . import simd

try:
    import numba
    from numba import njit
except ImportError:  # pragma: no cover - numba is a dependency; this keeps the torch fallback usable
    numba = None

SHARE_TOL = 1e-6  # float32 vote shares: sums such as 0.2 + 0.3 vs 0.5 differ by rounding only
TILE = 512  # rows per tile: classes x TILE float32 scratch arrays stay in L1 (L2 for many classes)
ROW_TILE = 128  # rows per tile of `vote_rows`: its rows of soft sums (16 KB at 32 lanes) stay in L1
MAX_CLASSES = 1024  # above, `aggregate` votes with torch: the tile kernel's scratch is ~6 KB a class a block
AHEAD = 32  # rows `vote_rows` prefetches ahead of its reads (24-96 measured alike; none: 0.7x)
GROUP_AHEAD = 256  # rows `vote_tiles` prefetches ahead at 2-8 classes (128-1024 within 10%; none: 0.75-0.92x)
if TILE % 64 or ROW_TILE % 64 or ROW_TILE > TILE:  # the 64-row reads of `simd.equal64` stay in a tile
    raise AssertionError("kernels_cpu.TILE and ROW_TILE must be multiples of 64, ROW_TILE <= TILE")


def available() -> bool:
    return numba is not None


def row_lanes(classes: int, probs_in: bool) -> int:
    """The row-vector width `vote_rows` votes with (8, 16 or 32 lanes), or 0 for `vote_tiles`.

    Measured on both kernels (`benchmarks/aggregate.py` and A/B runs in one process, outputs
    identical), on 2-core VMs:

    - Sapphire Rapids (AVX-512): with 32 lanes, probabilities 1.1-1.3x faster at 9-12 classes and
      1.5-1.8x at 20; logits 0.5-0.6x at 9-12 classes, level at 20, 1.9x at 32; at 2-8 classes
      the tiles 2-4x faster (narrower rows were not measured there, so that CPU keeps this choice).
    - AMD EPYC with AVX2: a row is best held in the narrowest of 8, 16 or 32 lanes: probabilities
      of 5-8 classes in 8 lanes 1.2-2.2x faster than the tiles then (at 2-4 classes 0.4-0.9x), 9-16
      classes in 16 lanes 1.4-1.7x the 32-lane rows; logits from 12 classes 1.2-1.4x (level at
      10, 0.7x at 5-6).
    - AMD EPYC Zen 4 (AVX-512 on 256-bit units): probabilities as on AVX2 (8 classes 1.07-1.22x
      the tiles, 7 classes 1.09-1.20x, 6 level; 12-16 classes in 16 lanes 1.01-1.21x the 32-lane
      rows), logits as on Sapphire Rapids (16 lanes at 12-14 classes 0.84-1.04x the tiles; 32
      lanes at 20 classes 0.90-1.02x).
    - Since the tiles vote 16 rows at a time in registers at 2-8 classes (`simd.group_vote`),
      they also beat the 8-lane rows at 5 classes: 1.03-1.22x on Zen 4, 1.14-1.29x with AVX2
      code on it (no AVX2-only CPU was at hand), so rows start at 6 classes there.
    - AMD EPYC Zen 5: probabilities of 6-8 classes 1.05-2.3x faster in the tiles than in 8-lane
      rows (soft and hard, 4-16 members; 4 x 6 hard 1.05x, the others 1.2x and more), 12-16
      classes 1.06-1.25x faster in 16 lanes than in 32: tiles up to 8 classes, then the
      narrowest rows. Logits as on the other AVX-512 CPUs (not measured on it).

    Example:
        >>> row_lanes(20, probs_in=True)
        32
    """
    zen = _zen()
    if _avx512() and not (probs_in and zen):
        return simd.LANES if (9 if probs_in else 17) <= classes <= simd.LANES else 0
    # Zen 5's tiles win up to 8 classes, Zen 4's and AVX2's up to 5
    if not ((9 if zen >= 5 else 6) if probs_in else 12) <= classes <= simd.LANES:
        return 0
    return next(width for width in simd.WIDTHS if classes <= width)


@functools.cache
def _zen() -> int:
    """The AMD Zen generation numba compiles for (LLVM's host CPU name znver4 -> 4), 0 for others."""
    try:
        from llvmlite import binding
        name = binding.get_host_cpu_name()
    except (ImportError, RuntimeError):  # pragma: no cover - llvmlite comes with numba
        return 0
    return int(name[5:]) if name.startswith("znver") and name[5:].isdigit() else 0


@functools.cache
def _avx512() -> bool:
    """Whether numba compiles for a CPU with AVX-512 (the host CPU, numba's default target)."""
    try:
        from llvmlite import binding
        return bool(binding.get_host_cpu_features().get("avx512f", False))
    except (ImportError, RuntimeError):  # pragma: no cover - llvmlite comes with numba
        return False


if numba is not None:

    @njit(inline="always")
    def first_non_finite(x, row, n):  # pragma: no cover - compiled
        """The first of rows [row, row + n) of `x` holding a value that is not finite, or -1."""
        for r in range(row, row + n):
            for m in range(x.shape[0]):
                for c in range(x.shape[2]):
                    if not np.isfinite(x[m, r, c]):
                        return r
        return -1

    @njit(inline="always")
    def agreeing_weight(own, weight, label, n, total):  # pragma: no cover - compiled
        """``total[r]`` = the weight of the members whose label ``own[m, r]`` is ``label[r]``, r < n."""
        zero = np.float32(0.0)
        for r in range(n):
            total[r] = zero
        for m in range(own.shape[0]):
            w = weight[m]
            own_m = own[m]
            for r in range(n):
                total[r] += w if own_m[r] == label[r] else zero

    @njit(inline="always")
    def count_equal(own, n, same):  # pragma: no cover - compiled
        """Add to ``same[i, j]`` (i < j) the rows r < n where ``own[i, r] == own[j, r]``, 64 rows per
        popcount of a 64-lane compare (rows past n hold other tiles' labels: masked off)."""
        words = (n + 63) // 64
        full = ~np.uint64(0)
        tail = full if n == words * 64 else (np.uint64(1) << np.uint64(n - (words - 1) * 64)) - np.uint64(1)
        for i in range(own.shape[0]):
            own_i = own[i]
            for j in range(i + 1, own.shape[0]):
                own_j = own[j]
                count = 0
                for k in range(words):
                    count += simd.popcount(simd.equal64(own_i, own_j, k * 64) & (tail if k == words - 1 else full))
                same[i, j] += count


def fused_vote(x: np.ndarray, method: str, weight: np.ndarray, temperature: np.ndarray,
               probs_in: bool = False, out: dict[str, np.ndarray] | None = None,
               member_details: bool = True, start: int = 0, stop: int | None = None,
               member_start: int = 0) -> dict[str, np.ndarray]:
    """Vote rows [start, stop) of one float32 (members, rows, classes) array in one parallel pass.

    Returns the same keys as `aggregate._vote_chunk` (numpy arrays) plus ``bad_row``: the index
    (relative to `start`) of the first row found with a non-finite value, or -1. `out` may hold
    preallocated output arrays for those rows (views into the caller's final arrays), which are
    then written in place. Passing the whole array with a row range, rather than a row slice,
    keeps the kernel on contiguous memory without a copy. The member arrays of `out` may be the
    caller's whole (members, all rows) arrays, this call's rows going to columns from
    `member_start`: a column slice would be a non-contiguous array, which numba compiles a
    second time (about 20 s a kernel).
    """
    if not x.flags.c_contiguous:
        x = x[:, start:stop]
        start, stop = 0, None
        x = np.ascontiguousarray(x)
    stop = x.shape[1] if stop is None else stop
    members, _, classes = x.shape
    rows = stop - start
    # numba's OpenMP layer, started by its first use here, sets the process's OpenMP thread count,
    # which is torch's too: it is put back below, or later forward passes would round differently
    torch_threads = torch.get_num_threads()
    blocks = max(1, min((rows + TILE - 1) // TILE, 4 * numba.get_num_threads()))
    out = dict(out or {})
    shapes = {"labels": ((rows,), np.int64), "scores": ((rows, classes), np.float32),
              "confidence": ((rows,), np.float32), "agreement": ((rows,), np.float32),
              "member_labels": ((members, rows), np.int64), "member_confidence": ((members, rows), np.float32)}
    for key, (shape, dtype) in shapes.items():
        if key not in out:
            # without member details the kernel never writes them: a 1-row placeholder suffices
            out[key] = np.empty((members, 1) if key.startswith("member") and not member_details else shape, dtype)
    for key in ("member_labels", "member_confidence") if member_details else ():
        if out[key].shape[0] != members or out[key].shape[1] < member_start + rows or not out[key].flags.c_contiguous:
            raise ValueError(f"fused_vote needs a C-contiguous '{key}' output of {members} rows and at least "
                             f"{member_start + rows} columns; got shape {out[key].shape}")
    partial = np.zeros((blocks, members, members), np.int64)
    bad = np.full(blocks, -1, np.int64)
    scores = out["scores"].reshape(-1)  # the kernel writes row-major scores through a flat view
    if not np.shares_memory(scores, out["scores"]):  # pragma: no cover - callers pass contiguous rows
        raise ValueError("fused_vote needs a C-contiguous 'scores' output")
    args = (x, start, stop, probs_in, method == "hard", weight.astype(np.float32), (1.0 / temperature).astype(np.float32),
            out["labels"], scores, out["confidence"], out["agreement"], out["member_labels"], out["member_confidence"],
            member_start, partial, bad, member_details)
    lanes = row_lanes(classes, probs_in)
    try:
        if lanes:
            from .kernels_cpu_rows import compiled_vote_rows

            compiled_vote_rows(args, lanes)(*args, lanes)
        else:
            from .kernels_cpu_tiles import vote_tiles

            vote_tiles(*args)
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
    equal = partial.sum(axis=0)
    out["equal_counts"] = equal + equal.T + np.diag(np.full(members, rows, np.int64))
    out["bad_row"] = int(bad[bad >= 0].min()) - start if (bad >= 0).any() else -1
    if not member_details:
        out.pop("member_labels"), out.pop("member_confidence")
    return out
