"""The row kernel of the fused CPU vote (`kernels_cpu`): best from 9 classes (AVX-512), 5 (AVX2).

`vote_rows` keeps each row of a member as one vector of 8, 16 or 32 lanes (`simd`), compiled
once per width: no transpose, the reductions over a row's classes are shuffle trees, and it
prefetches `AHEAD` rows in reading order.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import literally, njit, prange

from . import simd
from .kernels_cpu import AHEAD, ROW_TILE, SHARE_TOL, TILE, agreeing_weight, count_equal, first_non_finite


@njit(inline="always")
def _prefetch_ahead(flat, m, o, r, n, classes):  # pragma: no cover - compiled
    """Prefetch the row `AHEAD` rows on in `vote_rows`'s reading order: member m's tile rows
    from offset o, then the next member's, then member 0's next tile."""
    ahead = r + AHEAD
    if ahead < n:
        simd.prefetch(flat[m], o + ahead * classes)
    elif m + 1 < flat.shape[0]:
        simd.prefetch(flat[m + 1], o + (ahead - n) * classes)
    else:
        simd.prefetch(flat[0], o + ahead * classes)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def vote_rows(x, start, stop, probs_in, hard, weight, inv_temp, labels, scores, confidence, agreement,
              member_labels, member_confidence, member_start, equal_partial, bad, details, lanes):  # pragma: no cover - compiled
    """`kernels_cpu_tiles.vote_tiles`, row by row, each row of up to `lanes` classes one vector:
    the same outputs and tie-breaks. `lanes` (8, 16 or 32) is compiled in: one specialisation
    per width.

    Each member's row is one vector (`simd`): its argmax, confidence and (for logits)
    softmax come from one masked load and a few shuffle-tree reductions, and it is added
    into row-major soft sums (`lanes` floats a row, so no row straddles another's
    vector). No tile is transposed, which is what `vote_tiles` spends half its time on at 20
    classes; in exchange a row of 20 classes fills 20 of 32 lanes. Prefetching `AHEAD`
    rows in reading order lets memory run ahead of the member loop.
    """
    literally(lanes)
    members, all_rows, classes = x.shape
    flat = x.reshape(members, all_rows * classes)
    rows = stop - start
    blocks = equal_partial.shape[0]
    per_block = (rows + blocks - 1) // blocks
    zero = np.float32(0.0)
    tol = np.float32(SHARE_TOL)
    for b in prange(blocks):
        soft = np.zeros(ROW_TILE * lanes, np.float32)  # row-major, `lanes` floats a row
        shares = np.zeros(ROW_TILE * lanes, np.float32)
        own = np.empty((members, TILE), np.int16)  # labels (< MAX_CLASSES): 32 a vector for `count_equal`
        label = np.empty(TILE, np.int32)
        top = np.empty(TILE, np.float32)
        total = np.empty(TILE, np.float32)
        same = equal_partial[b]  # this block's own (zeroed) counts
        end = min(rows, (b + 1) * per_block)
        for t0 in range(b * per_block, end, ROW_TILE):
            n = min(ROW_TILE, end - t0)
            for i in range(n * lanes):
                soft[i] = zero
            if hard:
                for i in range(n * lanes):
                    shares[i] = zero
            for m in range(members):
                w = weight[m]
                t = inv_temp[m]
                xm = flat[m]
                o = (start + t0) * classes
                own_m = own[m]
                if probs_in:
                    for r in range(n):
                        _prefetch_ahead(flat, m, o, r, n, classes)
                        c, a = simd.row_vote_probs(soft, r * lanes, xm, o + r * classes, classes, w, t, lanes)
                        own_m[r] = a
                        total[r] = c
                else:
                    for r in range(n):
                        _prefetch_ahead(flat, m, o, r, n, classes)
                        c, a = simd.row_vote_logits(soft, r * lanes, xm, o + r * classes, classes, w, t, lanes)
                        own_m[r] = a
                        total[r] = c
                if hard:
                    for r in range(n):
                        shares[r * lanes + own_m[r]] += w
                if details:  # through slices: see `vote_tiles` on wrap-around checks
                    ml = member_labels[m][member_start + t0:member_start + t0 + n]
                    mc = member_confidence[m][member_start + t0:member_start + t0 + n]
                    for r in range(n):
                        ml[r] = own_m[r]
                    for r in range(n):
                        mc[r] = total[r]
            flagged = False
            if hard:
                for r in range(n):
                    best, arg, check = simd.row_hard(shares, soft, r * lanes, classes, tol, lanes)
                    top[r] = best
                    label[r] = arg
                    flagged |= check != zero
            else:
                for r in range(n):
                    best, arg, check = simd.row_best(soft, r * lanes, classes, lanes)
                    top[r] = best
                    label[r] = arg
                    flagged |= check != zero
            if flagged and bad[b] < 0:  # rare: find the first row that really is non-finite
                bad[b] = first_non_finite(x, start + t0, n)
            if hard:
                for r in range(n):
                    total[r] = top[r]  # the label's share is the agreeing weight
            else:
                agreeing_weight(own, weight, label, n, total)
            sums = shares if hard else soft
            tile_labels = labels[t0:t0 + n]
            tile_confidence = confidence[t0:t0 + n]
            tile_agreement = agreement[t0:t0 + n]
            for r in range(n):
                tile_labels[r] = label[r]
                tile_confidence[r] = top[r]
                tile_agreement[r] = total[r]
            for r in range(n):
                simd.row_store(scores, (t0 + r) * classes, sums, r * lanes, classes, lanes)
            count_equal(own, n, same)


def compiled_vote_rows(args: tuple, lanes: int):
    """`vote_rows`'s compiled specialisation for these arguments and `lanes`.

    Called through its dispatcher, a function that asks for a literal argument is typed again on
    every call (the plain-int attempt fails before the literal one is found): 0.2 s a call here,
    so once compiled (or loaded from the disk cache) the specialisation is called directly.
    """
    key = tuple(numba.typeof(a) for a in args) + (numba.types.literal(lanes),)
    compiled = vote_rows.overloads.get(key)
    if compiled is None:
        return vote_rows  # the first call: types, then compiles or loads the specialisation
    return compiled.entry_point
