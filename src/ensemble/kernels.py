"""A fused Triton kernel for the vote: one launch does what `aggregate._vote_chunk` does.

`fused_vote` reproduces `ensemble.aggregate._vote_chunk` (the reference semantics; see the
module docstring of `ensemble.aggregate` for the tie-breaking rules) for one
(members, rows, classes) tensor on the GPU, reading the logits in their own dtype (float32,
bfloat16 or float16) and computing in float32 registers. Every output is written exactly once,
straight from registers; no (members, rows, classes) intermediate ever touches memory.

One kernel body (``_vote``), compiled two ways: ``_vote_kernel`` gets (rows, classes) tiles with
the lanes of a warp along the classes; ``_vote_rows_kernel`` loads each tile as (classes, rows)
and transposes the view, so each thread holds whole rows and reductions over classes need no
shuffles. `_launch` picks one by class count, as measured on an H200 (3-8 classes: the rows
kernel; see its docstring).

Kernel design:

* Grid: one program per ``BLOCK_ROWS`` rows. Classes are padded to ``BLOCK_C`` (the next power
  of 2, at least 2) and masked: padded logits read as -inf, so they get probability 0, never win
  an argmax and never receive a vote. ``BLOCK_ROWS = min(256, 1024 // BLOCK_C,
  2048 // BLOCK_M)`` (at least 1), so a (BLOCK_ROWS, BLOCK_C) tile is ~1K elements, 8 per
  thread at 4 warps; a single row wider than that gets up to 16 warps (see `_blocks`).
* A runtime loop over members (``for m in range(M)``: one compiled kernel per block shape, not
  per member count), in member order 0, 1, 2, ... For member m the program loads its
  (BLOCK_ROWS, BLOCK_C) tile of logits in their own dtype, upcasts to float32, takes the argmax
  of the logits (first maximum -> lowest index), the softmax of ``logits / T[m]`` (its maximum
  is max(logits) / T[m] exactly, so one max serves both), the member's confidence (the
  probability of its argmax: exp(0) / sum = 1 / sum, no further reduction), and adds
  ``w[m] * p`` to the soft scores and (hard voting) ``w[m]`` to the share of the member's class.
  Both sums are plain float32 multiply-then-add in member order, exactly like the reference,
  and the kernel is compiled
  with ``enable_fp_fusion=False`` so that no multiply-add is contracted into an FMA: the
  rounding is that of the reference's separate ``*`` and ``+``, classes with identical inputs
  get bit-identical scores, and sums of the same products in another class order
  (``w*p + w*q`` vs ``w*q + w*p``) tie exactly as they do in the reference.
* Each member's labels also go into a (BLOCK_M, BLOCK_ROWS) int32 register tile (BLOCK_M = the
  next power of 2 >= members, rows for members not seen yet hold -1). Right after member m,
  comparing its labels with that tile gives, for every j <= m, the number of this block's rows
  where members j and m agree; two masked vector ``tl.atomic_add`` calls (relaxed, so they
  compile to fire-and-forget ``red`` instructions, no round trip or barrier) add them to
  ``[j, m]`` and ``[m, j]`` (j < m) of one int64 (M, M) slice of a (slices, M, M) buffer, slice
  ``pid % slices``, which the host sums. That is M*M integer atomics per program in all, exact
  and order-independent, so the result is deterministic; the slices (a few thousand for up to
  16 members, see `_slices`) keep programs that run at the same time off each other's
  addresses. After the loop the same tile gives the soft vote's agreement.
* Labels: soft -> argmax of the soft scores, exact ties -> lowest index. Hard -> classes whose
  float32 share is within ``SHARE_TOL`` (1e-6) of the row's largest share are tied; among them
  the highest soft score wins, exact equality -> lowest index. (The reference tallies shares in
  float64 with a 1e-9 tolerance; float32 sums of normalised weights round at ~1e-7, so 1e-6 is
  the same idea one precision down. Shares that genuinely differ by less than 1e-6 are treated
  as tied here; with real weights that never happens by accident.)
* Member labels are stored directly as int64 (no int32 -> int64 conversion pass); labels are
  int64 too. ``equal_counts`` is accumulated in an int64 buffer.

Non-finite input is found in the same pass: ``x * 0`` (exactly +0.0 for a finite logit, NaN for
NaN or +-inf) is added into each member's softmax sum, so a row with such a logit gets a NaN
sum; each program reports its first such row with a relaxed ``atomic_min`` into ``bad_row``.

Bytes moved per row, for a GB/s figure (M members, C classes, s = the logits' itemsize):

* read:  ``M * C * s`` (logits; the weights and temperatures, 8 * M bytes per launch, are noise)
* write: ``4 * C`` (scores) + ``8 + 4 + 4`` (label, confidence, agreement)
  + ``M * (8 + 4)`` (member label, member confidence)
* total: ``M * C * s + 4 * C + 12 * M + 16`` (`bytes_per_row`), plus M*M int64 atomic adds
  per program (``ceil(rows / BLOCK_ROWS)`` programs) for ``equal_counts``, which stay in L2
  (up to 8 MiB of slices).

Numbers differ from the reference only by float32 rounding (the GPU's ``exp`` and division are
not bit-identical to torch's), so scores, confidence and agreement match to ~1e-6 relative;
labels, member labels and equal counts match exactly except where two classes' scores differ
only by such rounding.

Triton is imported when this module is imported (the module itself is only imported when a
GPU tensor is voted, or by its tests); without Triton the module still imports, `available`
returns False and `fused_vote` raises. Set ``TRITON_INTERPRET=1`` *before* importing this module
to run the kernel on CPU tensors through Triton's interpreter (that is how the tests run
without a GPU).
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

import torch

try:  # pragma: no cover - which branch runs depends on the environment
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None

__all__ = ["MAX_CLASSES", "MAX_MEMBERS", "available", "bytes_per_row", "fused_vote"]

# A row of next_pow2(classes) float32 values (two for hard voting) lives in registers; at 8192
# classes that is ~120 registers per thread at 16 warps (no spills on sm_90). Beyond, call the
# torch reference instead.
MAX_CLASSES = 8192
# Members are a runtime loop; the limit only bounds the (next_pow2(members), BLOCK_ROWS) label
# tile kept for equal counts and agreement.
MAX_MEMBERS = 64

SHARE_TOL = 1e-6

# Elements of one (BLOCK_ROWS, BLOCK_C) tile per program (see `_blocks`).
_TILE_ELEMENTS = 1024
# Int64 counts in the slices of equal counts at most (see `_slices`): 8 MiB, 4,096 slices at 16
# members, 1,024 at 32, 256 at 64.
MAX_SLICE_COUNTS = 1 << 20
# The rows kernel keeps whole rows in a thread: at most this many float32 values per row in
# registers (soft scores, shares and logits, BLOCK_C each, plus BLOCK_M member labels; `_launch`).
ROWS_KERNEL_MAX_REGISTER_VALUES = 160

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Whether the kernel below was built for Triton's CPU interpreter (TRITON_INTERPRET=1 when
# this module was imported) rather than compiled for a GPU.
_INTERPRETED = False


def available() -> bool:
    """True when `fused_vote` can run: Triton imports, and CUDA is available or the kernel runs
    under Triton's interpreter (``TRITON_INTERPRET=1`` set before this module was imported)."""
    if triton is None:
        return False
    return _INTERPRETED or torch.cuda.is_available()


def bytes_per_row(members: int, classes: int, itemsize: int) -> int:
    """Bytes `fused_vote` reads plus writes per row (see the module docstring)."""
    return members * classes * itemsize + 4 * classes + 12 * members + 16


if triton is not None:
    _knobs = getattr(triton, "knobs", None)  # triton >= 3.4; older ones read the variable
    if _knobs is not None:
        _INTERPRETED = bool(_knobs.runtime.interpret)
    else:  # pragma: no cover
        _INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on")

    def _vote(
        x_ptr,
        w_ptr,
        t_ptr,
        labels_ptr,
        scores_ptr,
        confidence_ptr,
        agreement_ptr,
        member_labels_ptr,
        member_confidence_ptr,
        equal_counts_ptr,
        bad_ptr,
        SLICES,
        M,
        R,
        C,
        stride_m,
        stride_r,
        stride_c,
        HARD: tl.constexpr,
        SHARE_TOL: tl.constexpr,
        BLOCK_ROWS: tl.constexpr,
        BLOCK_C: tl.constexpr,
        BLOCK_M: tl.constexpr,
        WIDE: tl.constexpr,
        ROWS_IN_THREAD: tl.constexpr,
        COUNTS: tl.constexpr,
    ):
        """The vote of one block of rows (the module docstring has the design). ROWS_IN_THREAD
        loads each member's tile as (classes, rows) and transposes the view: Triton then lays the
        lanes of a warp along rows, each thread holds whole rows, and the reductions over classes
        stay in its registers (no shuffles); it is `_vote_rows_kernel`, whose stride_c is not
        specialised (were it the constant 1, Triton would see classes as the contiguous axis and
        lay the lanes along them again). COUNTS=False leaves out the equal counts (the
        benchmark's measure of what they cost; every `fused_vote` call counts them)."""
        pid = tl.program_id(0)
        first_row = pid * BLOCK_ROWS  # R < 2**31 (checked on the host): int32 row indices
        # This program's equal counts go to slice pid % SLICES of the (SLICES, M, M) buffer (see
        # `_slices`): programs that run at the same time add to different addresses.
        equal_counts_ptr += (pid % SLICES).to(tl.int64) * M * M
        local = tl.arange(0, BLOCK_ROWS)
        rows = first_row + local
        cols = tl.arange(0, BLOCK_C)
        mids = tl.arange(0, BLOCK_M)
        row_ok = rows < R
        col_ok = cols < C
        tile_mask = row_ok[:, None] & col_ok[None, :]
        # 64-bit arithmetic once per program for the block's base; in-block offsets are int32
        # unless the strides are so large that they could overflow (WIDE, decided on the host).
        first_row64 = first_row.to(tl.int64)
        local_x = local.to(tl.int64) if WIDE else local
        cols_x = cols.to(tl.int64) if WIDE else cols
        if ROWS_IN_THREAD:
            x_offsets = cols_x[:, None] * stride_c + local_x[None, :] * stride_r
            x_mask = col_ok[:, None] & row_ok[None, :]
        else:
            x_offsets = local_x[:, None] * stride_r + cols_x[None, :] * stride_c
            x_mask = tile_mask

        soft = tl.zeros((BLOCK_ROWS, BLOCK_C), dtype=tl.float32)
        shares = tl.zeros((BLOCK_ROWS, BLOCK_C), dtype=tl.float32)
        bad_rows = local < 0  # rows with a NaN or infinite logit (none so far)
        # Member m's labels in row m; -1 (never a label) for members not seen yet / padding.
        member_tile = tl.full((BLOCK_M, BLOCK_ROWS), -1, dtype=tl.int32)

        # Per-member base pointers advance by one member each step (no m * stride product that
        # could overflow int32 on big inputs).
        x_member = x_ptr + first_row64 * stride_r
        member_labels_row = member_labels_ptr
        member_confidence_row = member_confidence_ptr
        for m in range(0, M):
            w = tl.load(w_ptr + m)
            t = tl.load(t_ptr + m)
            # Padded rows read 0 (finite, so no NaN from -inf - -inf); padded classes -inf.
            raw = tl.load(x_member + x_offsets, mask=x_mask, other=0.0)
            if ROWS_IN_THREAD:
                raw = tl.trans(raw)
            x32 = raw.to(tl.float32)
            logits = tl.where(col_ok[None, :], x32, float("-inf"))
            # Member argmax on the logits themselves: first maximum -> lowest class index.
            top = tl.max(logits, axis=1)
            label = tl.min(tl.where(logits == top[:, None], cols[None, :], BLOCK_C), axis=1)
            # max(logits / t) is max(logits) / t exactly (t > 0; division rounds monotonically),
            # and the label's e is exp(0) = 1, so its probability is 1 / sum(e): no more reductions.
            e = tl.exp(logits / t - (top / t)[:, None])
            # + x * 0: exactly +0.0 for a finite logit, NaN for NaN or +-inf, so r is NaN where
            # the row's input is not finite: the input check rides along in the one pass over
            # the logits (such a row's outputs are not used)
            r = 1.0 / tl.sum(e + x32 * 0.0, axis=1)
            bad_rows = bad_rows | (r != r)
            p = e * r[:, None]
            soft = soft + w * p
            if HARD:
                shares = shares + tl.where(cols[None, :] == label[:, None], w, 0.0)
            tl.store(member_labels_row + rows, label.to(tl.int64), mask=row_ok)
            tl.store(member_confidence_row + rows, r, mask=row_ok)
            x_member += stride_m
            member_labels_row += R
            member_confidence_row += R
            member_tile = tl.where(mids[:, None] == m, label[None, :], member_tile)
            if COUNTS:
                same = (member_tile == label[None, :]) & row_ok[None, :]
                # counts[j] = rows of this block where members j and m agree, for j <= m (the tile
                # holds -1 for members after m): add them to equal_counts[j, m] and [m, j].
                # Relaxed atomics whose result is unused compile to fire-and-forget reductions
                # (red.relaxed); Triton's default, acq_rel, made each a round trip to L2 with a
                # barrier on each side, twice per member (the host reads the counts only after
                # the kernel has finished).
                counts = tl.sum(same.to(tl.int32), axis=1).to(tl.int64)
                tl.atomic_add(equal_counts_ptr + mids * M + m, counts, mask=mids <= m, sem="relaxed")
                tl.atomic_add(equal_counts_ptr + m * M + mids, counts, mask=mids < m, sem="relaxed")

        if HARD:
            share_top = tl.max(tl.where(col_ok[None, :], shares, -1.0), axis=1)
            tied = (shares >= share_top[:, None] - SHARE_TOL) & col_ok[None, :]
            # Soft scores are >= 0, so -1 excludes untied classes; equal soft -> lowest index.
            candidate = tl.where(tied, soft, -1.0)
            best = tl.max(candidate, axis=1)
            labels = tl.min(tl.where(candidate == best[:, None], cols[None, :], BLOCK_C), axis=1)
            scores = shares
        else:
            candidate = tl.where(col_ok[None, :], soft, -1.0)
            best = tl.max(candidate, axis=1)
            labels = tl.min(tl.where(candidate == best[:, None], cols[None, :], BLOCK_C), axis=1)
            scores = soft
        if HARD:
            confidence = tl.sum(tl.where(cols[None, :] == labels[:, None], scores, 0.0), axis=1)
            agreement = confidence
        else:
            confidence = best
            w_all = tl.load(w_ptr + mids, mask=mids < M, other=0.0)
            agree = member_tile == labels[None, :]
            agreement = tl.sum(tl.where(agree, w_all[:, None], 0.0), axis=0)

        tl.store(labels_ptr + rows, labels.to(tl.int64), mask=row_ok)
        tl.store(confidence_ptr + rows, confidence, mask=row_ok)
        tl.store(agreement_ptr + rows, agreement, mask=row_ok)
        score_offsets = local[:, None] * C + cols[None, :]  # < BLOCK_ROWS * C: fits int32
        tl.store(scores_ptr + first_row64 * C + score_offsets, scores, mask=tile_mask)
        first_bad = tl.min(tl.where(bad_rows & row_ok, rows, R))
        tl.atomic_min(bad_ptr, first_bad, mask=first_bad < R, sem="relaxed")

    _vote_kernel = triton.jit(_vote)
    _vote_rows_kernel = triton.jit(do_not_specialize=["stride_c"])(_vote)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocate one output (every element is written by the kernel). Tests patch this to fill
    outputs with sentinels and check that nothing is left unwritten."""
    return torch.empty(shape, dtype=dtype, device=device)


def _padded(members: int, classes: int) -> tuple[int, int]:
    """BLOCK_C and BLOCK_M: classes and members padded to a power of 2, at least 2."""
    return max(2, triton.next_power_of_2(classes)), max(2, triton.next_power_of_2(members))


def _blocks(members: int, classes: int) -> tuple[int, int, int, int]:
    """BLOCK_ROWS, BLOCK_C, BLOCK_M and num_warps for a launch."""
    block_c, block_m = _padded(members, classes)
    # Each (BLOCK_ROWS, BLOCK_C) float32 tile ~1K elements (8 per thread at 4 warps) and the
    # (BLOCK_M, BLOCK_ROWS) label tile at most 2K. Compiled for sm_90 this uses 56-100
    # registers per thread without spills (4-8 programs per SM) for 2-1024 classes and 2-64
    # members. Wider rows (one row per program) get more warps: ~8 elements per thread.
    block_rows = max(1, min(256, _TILE_ELEMENTS // block_c, 2048 // block_m))
    num_warps = min(16, max(4, block_rows * block_c // 256))
    return block_rows, block_c, block_m, num_warps


class Launch(NamedTuple):
    """How `fused_vote` launches: which kernel, and its rows per program and warps (see `_launch`;
    the benchmark's sweep compares them)."""

    kernel: str  # "rows" (`_vote_rows_kernel`) or "tile" (`_vote_kernel`)
    block_rows: int
    num_warps: int


def _launch(members: int, classes: int) -> Launch:
    """The launch for a (members, rows, classes) vote, as measured on an H200
    (``benchmarks/aggregate.py --sweep``, 10M rows, soft votes; benchmarks/RESULTS.md, On an H200).

    3-8 classes go to the rows kernel, 64 rows (two warps) per program: 8 x 5 bf16 3.6G rows/s
    against 3.2G for the tile kernel, 16 x 5 bf16 1.3G against 1.0G. At 2 classes the tile kernel
    is faster (its loads are vectors, and two lanes per row cost little: 4 x 2 fp32 18.6G against
    15.2G), and at 9-32 classes by far (a thread holding a whole padded row of 32 needs ~170
    registers, too few programs then fit an SM: 8 x 20 bf16 1.06G against 0.25G); wider rows
    never fit a thread.
    """
    block_c, block_m = _padded(members, classes)
    if block_c in (4, 8) and 3 * block_c + block_m <= ROWS_KERNEL_MAX_REGISTER_VALUES:
        return Launch("rows", block_rows=64, num_warps=2)
    block_rows, _, _, num_warps = _blocks(members, classes)
    return Launch("tile", block_rows, num_warps)


def _needs_int64_offsets(x: torch.Tensor, block_rows: int, block_c: int) -> bool:
    """Whether offsets inside one (BLOCK_ROWS, BLOCK_C) block of x could overflow int32 (only
    for exotic strides, e.g. classes as the outermost dimension of a huge tensor)."""
    reach = (block_rows - 1) * abs(x.stride(1)) + (block_c - 1) * abs(x.stride(2))
    return reach >= 2**31


def _slices(programs: int, members: int, slices: int | None) -> int:
    """How many (M, M) slices the equal counts are spread over (program pid adds to slice
    pid % slices).

    Every program adds M*M counts with atomics. Into one (M, M) buffer, the programs running at
    the same time (thousands on a GPU) would all add to the same M*M addresses, and atomics to
    one address wait for each other: at 16 members x 20 classes that is 8 atomic adds per row
    against 640 bytes of bf16 logits. Spread over up to `MAX_SLICE_COUNTS` counts (8 MiB of
    int64), programs running together meet at no address; the host sums the slices (one small
    reduction). `slices` forces a count (1: a single buffer; the benchmark compares them).
    """
    if slices is None:
        slices = MAX_SLICE_COUNTS // (members * members)
    return max(1, min(programs, slices))


def fused_vote(
    x: torch.Tensor, method: str, weights: torch.Tensor, temperatures: torch.Tensor,
    slices: int | None = None, launch: Launch | None = None, counts: bool = True,
) -> dict[str, torch.Tensor]:
    """The whole vote for one (members, rows, classes) tensor in one kernel launch.

    Same semantics, keys, dtypes and shapes as `ensemble.aggregate._vote_chunk`.

    Args:
        x: (members, rows, classes) logits on a CUDA device (any device under
            ``TRITON_INTERPRET=1``); float32, bfloat16 or float16, read in that dtype (no upcast
            copy), any strides. Non-finite logits are found in the same pass (``bad_row``).
        method: ``"soft"`` or ``"hard"``.
        weights: (members,) weights normalised to sum to 1 (converted to float32 on x's device).
        temperatures: (members,) positive temperatures (converted to float32 on x's device).
        slices: how many copies of the equal counts the programs add to (see `_slices`);
            None chooses.
        launch: the kernel and its block (see `Launch`); None chooses (`_launch`).
        counts: False leaves ``equal_counts`` zero, rows kernel only (the benchmark's measure of
            what counting costs).

    Returns:
        ``labels`` (rows,) int64, ``scores`` (rows, classes) float32, ``confidence`` (rows,)
        float32, ``agreement`` (rows,) float32, ``member_labels`` (members, rows) int64,
        ``member_confidence`` (members, rows) float32, ``equal_counts`` (members, members) int64,
        all on x's device, and ``bad_row`` (1,) int64: the first row holding a NaN or infinite
        logit, -1 if none (the other outputs are then meaningless; `aggregate` raises).

    Raises:
        RuntimeError: when Triton is not installed or there is no GPU (and no interpreter).
        ValueError: for an unknown method, a bad shape or dtype, or too many members/classes.
    """
    if not available():
        raise RuntimeError(
            "fused_vote needs Triton and a CUDA device (or TRITON_INTERPRET=1 set before "
            "ensemble.kernels is imported)"
        )
    if method not in ("hard", "soft"):
        raise ValueError(f"method must be 'hard' or 'soft'; got {method!r}")
    if x.ndim != 3:
        raise ValueError(f"x must have shape (members, rows, classes); got {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise ValueError(f"x must be float32, bfloat16 or float16; got {x.dtype}")
    if not _INTERPRETED and x.device.type != "cuda":
        raise ValueError(f"x must be on a CUDA device; got {x.device}")
    members, rows, classes = (int(n) for n in x.shape)
    if members < 1 or classes < 1:
        raise ValueError(f"x needs at least one member and one class; got {tuple(x.shape)}")
    if rows >= 2**31:
        raise ValueError(f"fused_vote supports fewer than 2**31 rows per call; got {rows}")
    if members > MAX_MEMBERS or classes > MAX_CLASSES:
        raise ValueError(
            f"fused_vote supports up to {MAX_MEMBERS} members and {MAX_CLASSES} classes; "
            f"got {members} and {classes}"
        )
    device = x.device
    weight = weights.detach().to(device=device, dtype=torch.float32).contiguous()
    temperature = temperatures.detach().to(device=device, dtype=torch.float32).contiguous()
    if weight.shape != (members,) or temperature.shape != (members,):
        raise ValueError(
            f"weights and temperatures need one entry per member ({members}); got shapes "
            f"{tuple(weight.shape)} and {tuple(temperature.shape)}"
        )

    out = {
        "labels": _empty((rows,), torch.int64, device),
        "scores": _empty((rows, classes), torch.float32, device),
        "confidence": _empty((rows,), torch.float32, device),
        "agreement": _empty((rows,), torch.float32, device),
        "member_labels": _empty((members, rows), torch.int64, device),
        "member_confidence": _empty((members, rows), torch.float32, device),
    }
    launch = launch or _launch(members, classes)
    if launch.kernel not in ("rows", "tile"):
        raise ValueError(f"launch.kernel must be 'rows' or 'tile'; got {launch.kernel!r}")
    if not counts and launch.kernel != "rows":
        raise ValueError("counts=False needs the rows kernel; got launch.kernel 'tile'")
    block_c, block_m = _padded(members, classes)
    grid = (triton.cdiv(rows, launch.block_rows),)
    # Accumulated with atomics, so it starts at zero; summed over its slices below.
    partial = torch.zeros((_slices(grid[0], members, slices), members, members), dtype=torch.int64, device=device)
    bad = torch.full((1,), rows, dtype=torch.int64, device=device)  # the first row with a non-finite logit
    args = (x, weight, temperature, out["labels"], out["scores"], out["confidence"], out["agreement"],
            out["member_labels"], out["member_confidence"], partial, bad, partial.shape[0], members, rows, classes,
            x.stride(0), x.stride(1), x.stride(2))
    options = dict(HARD=method == "hard", SHARE_TOL=SHARE_TOL, BLOCK_ROWS=launch.block_rows, BLOCK_C=block_c,
                   BLOCK_M=block_m, WIDE=_needs_int64_offsets(x, launch.block_rows, block_c),
                   num_warps=launch.num_warps,
                   # No FMA contraction: soft sums must round like the reference's mul-then-add.
                   enable_fp_fusion=False)
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        if rows > 0 and launch.kernel == "rows":  # (an empty grid cannot be launched)
            _vote_rows_kernel[grid](*args, ROWS_IN_THREAD=True, COUNTS=counts, **options)
        elif rows > 0:
            _vote_kernel[grid](*args, ROWS_IN_THREAD=False, COUNTS=True, **options)
    out["equal_counts"] = partial.sum(dim=0)
    out["bad_row"] = bad.masked_fill_(bad == rows, -1)
    return out
