"""The tile kernel of the fused CPU vote (`kernels_cpu`): best at 2-8 classes.

`vote_tiles` walks the rows in tiles of `TILE`. Each member's tile (TILE x classes values, one
contiguous block of the input) is read once, transposed on the way into a small class-major
scratch that stays in L1, so that every later loop runs along rows with unit stride and no
data-dependent branch (compare-and-select only), which LLVM vectorises (AVX-512: 16 rows per
instruction). The transposing copy has a compile-time stride at 2-8 classes (`_copy_tile`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import simd
from .kernels_cpu import SHARE_TOL, TILE, agreeing_weight, count_equal, first_non_finite


@njit(inline="always")
def _argmax_rows(tile, n, best, arg):  # pragma: no cover - compiled
    """Per row r < n, the class of the largest ``tile[c, r]`` (first on ties) and its value.

    Class-outer, rows-inner over a class-major tile, compare-and-select only: the row loop
    touches three arrays and vectorises.
    """
    x0 = tile[0]
    for r in range(n):
        best[r] = x0[r]
        arg[r] = 0
    for c in range(1, tile.shape[0]):
        xc = tile[c]
        for r in range(n):
            v = xc[r]
            greater = v > best[r]
            best[r] = v if greater else best[r]
            arg[r] = c if greater else arg[r]


@njit(inline="always")
def _copy(flat, tile, n, classes, back):  # pragma: no cover - compiled
    """Between one member's row-major tile ``flat[r * classes + c]`` and the class-major
    scratch ``tile[c, r]``, r < n: into the scratch, or `back` out of it.

    Into the scratch runs class-outer over a strided view, out of it row-outer: with a
    compile-time constant class count (see `_copy_tile`) LLVM turns either into wide loads or
    stores and shuffles instead of one scalar access per value.
    """
    if back:
        for r in range(n):
            for c in range(classes):
                flat[r * classes + c] = tile[c, r]
    else:
        for c in range(classes):
            tc = tile[c]
            s = flat[c:]
            for r in range(n):
                tc[r] = s[r * classes]


@njit(inline="always")
def _copy_tile(flat, tile, n, classes, back):  # pragma: no cover - compiled
    """`_copy` with the class count a literal for 2-8: numba passes LLVM a constant only where
    the call site has one. Loads get 1.3-2x faster, stores 3-6x; above 8 classes the stride
    stays a runtime value and the copy scalar."""
    if classes == 2 and not back:  # two explicit streams deinterleave twice as fast again
        t0 = tile[0]
        t1 = tile[1]
        for r in range(n):
            t0[r] = flat[2 * r]
            t1[r] = flat[2 * r + 1]
    elif classes == 2:
        _copy(flat, tile, n, 2, back)
    elif classes == 3:
        _copy(flat, tile, n, 3, back)
    elif classes == 4:
        _copy(flat, tile, n, 4, back)
    elif classes == 5:
        _copy(flat, tile, n, 5, back)
    elif classes == 6:
        _copy(flat, tile, n, 6, back)
    elif classes == 7:
        _copy(flat, tile, n, 7, back)
    elif classes == 8:
        _copy(flat, tile, n, 8, back)
    else:
        _copy(flat, tile, n, classes, back)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def vote_tiles(x, start, stop, probs_in, hard, weight, inv_temp, labels, scores, confidence, agreement,
               member_labels, member_confidence, member_start, equal_partial, bad, details):  # pragma: no cover - compiled
    """Rows [start, stop) of the C-contiguous (members, all_rows, classes) `x`; the outputs
    hold those rows only (output row 0 is input row `start`).

    Every inner loop runs over the rows of a tile and touches at most three or four arrays:
    with more, LLVM gives up the runtime overlap checks it needs to vectorise (numba cannot
    tell it that the scratch arrays never overlap), and the loop runs one row at a time.
    """
    members, all_rows, classes = x.shape
    flat = x.reshape(members, all_rows * classes)
    rows = stop - start
    blocks = equal_partial.shape[0]
    per_block = (rows + blocks - 1) // blocks
    zero = np.float32(0.0)
    full = ~np.uint64(0)
    for b in prange(blocks):
        xt = np.empty((classes, TILE), np.float32)  # one member's tile, class-major
        soft = np.zeros((classes, TILE), np.float32)
        shares = np.zeros((classes, TILE), np.float32)
        own = np.empty((members, TILE), np.int32)
        bits = np.empty((TILE // 64, members), np.uint64)  # two classes: labels as bits, 64 rows a word
        best = np.empty(TILE, np.float32)
        arg = np.empty(TILE, np.int32)
        total = np.empty(TILE, np.float32)
        check = np.empty(TILE, np.float32)
        label = np.empty(TILE, np.int32)
        top = np.empty(TILE, np.float32)
        same = equal_partial[b]  # this block's own (zeroed) counts
        end = min(rows, (b + 1) * per_block)
        for t0 in range(b * per_block, end, TILE):
            n = min(TILE, end - t0)
            words = (n + 63) // 64
            tail = full if n == words * 64 else (np.uint64(1) << np.uint64(n - (words - 1) * 64)) - np.uint64(1)
            for c in range(classes):
                soft_c = soft[c]
                for r in range(n):
                    soft_c[r] = zero
                if hard:
                    shares_c = shares[c]
                    for r in range(n):
                        shares_c[r] = zero
            for r in range(n):
                check[r] = zero
            for m in range(members):
                w = weight[m]
                xm = flat[m]
                # the member's tile, xm[o:o + n * classes] row-major, into the class-major scratch
                o = (start + t0) * classes
                _copy_tile(xm[o:o + n * classes], xt, n, classes, False)
                # member argmax on the raw values: the first maximum wins
                _argmax_rows(xt, n, best, arg)
                if probs_in:
                    # non-finite inputs make the soft sums non-finite (0 * inf is NaN too)
                    for c in range(classes):
                        xc = xt[c]
                        soft_c = soft[c]
                        for r in range(n):
                            soft_c[r] += w * xc[r]
                    if details:
                        mc = member_confidence[m]
                        for r in range(n):
                            mc[member_start + t0 + r] = best[r]
                else:
                    for c in range(classes):  # a sum is non-finite if any term is (or overflows)
                        xc = xt[c]
                        for r in range(n):
                            check[r] += xc[r]
                    t = inv_temp[m]
                    for r in range(n):
                        total[r] = zero
                    for c in range(classes):
                        xc = xt[c]
                        for r in range(n):
                            e = simd.exp((xc[r] - best[r]) * t)
                            xc[r] = e
                            total[r] += e
                    for r in range(n):
                        total[r] = np.float32(1.0) / total[r]
                    for c in range(classes):
                        xc = xt[c]
                        soft_c = soft[c]
                        for r in range(n):
                            soft_c[r] += w * (xc[r] * total[r])
                    if details:
                        mc = member_confidence[m]
                        for r in range(n):
                            mc[member_start + t0 + r] = total[r]  # exp(0) / sum
                if details:
                    ml = member_labels[m]
                    for r in range(n):
                        ml[member_start + t0 + r] = arg[r]
                own_m = own[m]
                for r in range(n):
                    own_m[r] = arg[r]
                if classes == 2:  # rows past n cleared (stale, though the same for every member)
                    for k in range(words):
                        bits[k, m] = simd.nonzero64(arg, k * 64) & (tail if k == words - 1 else full)
                if hard:
                    for c in range(classes):
                        shares_c = shares[c]
                        for r in range(n):
                            shares_c[r] += w if arg[r] == c else zero
            if probs_in:
                for c in range(classes):
                    soft_c = soft[c]
                    for r in range(n):
                        check[r] += soft_c[r]
            flagged = False
            for r in range(n):
                flagged |= check[r] - check[r] != zero
            if flagged and bad[b] < 0:  # rare: find the first row that really is non-finite
                bad[b] = first_non_finite(x, start + t0, n)
            # the ensemble label, with the documented tie-breaks
            if hard:
                s0 = shares[0]
                for r in range(n):
                    top[r] = s0[r]
                for c in range(1, classes):
                    shares_c = shares[c]
                    for r in range(n):
                        top[r] = max(top[r], shares_c[r])
                for r in range(n):
                    top[r] = top[r] - SHARE_TOL
                # tied classes (share within SHARE_TOL of the top) compete on soft score, the
                # lowest index winning exact ties; the others are out (-inf)
                for c in range(classes):
                    shares_c = shares[c]
                    soft_c = soft[c]
                    xc = xt[c]
                    for r in range(n):
                        xc[r] = soft_c[r] if shares_c[r] >= top[r] else -np.inf
                _argmax_rows(xt, n, best, label)
                for r in range(n):
                    top[r] = shares[label[r], r]
                for r in range(n):
                    labels[t0 + r] = label[r]
                for r in range(n):
                    confidence[t0 + r] = top[r]
                    agreement[t0 + r] = top[r]  # the label's share is the agreeing weight
                _copy_tile(scores[t0 * classes:(t0 + n) * classes], shares, n, classes, True)
            else:
                _argmax_rows(soft, n, top, label)
                agreeing_weight(own, weight, label, n, total)
                for r in range(n):
                    labels[t0 + r] = label[r]
                for r in range(n):
                    confidence[t0 + r] = top[r]
                    agreement[t0 + r] = total[r]
                _copy_tile(scores[t0 * classes:(t0 + n) * classes], soft, n, classes, True)
            # the member x member equal-prediction counts, 64 rows per popcount: with two classes
            # of the differing label bits (packed once per member), else of a 64-lane compare
            if classes == 2:
                for i in range(members):
                    for j in range(i + 1, members):
                        count = n
                        for k in range(words):
                            count -= simd.popcount(bits[k, i] ^ bits[k, j])
                        same[i, j] += count
            else:
                count_equal(own, n, same)
