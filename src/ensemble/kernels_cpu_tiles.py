"""The tile kernel of the fused CPU vote (`kernels_cpu`): best at 2-8 classes.

`vote_tiles` walks the rows in tiles of `TILE`. Each member's tile (TILE x classes values, one
contiguous block of the input) is read once. At 2-8 classes, 16 rows at a time go through
`simd.group_vote`: one wide load shuffled into one vector per class, the member's argmax,
softmax, soft sums and vote shares in registers, and only the class-major sums (in L1) stored;
reads are prefetched `GROUP_AHEAD` rows ahead (without, memory and compute take turns: 1.1-1.35x
slower, where prefetching made the old copy-and-loops path no faster).
Above 8 classes the tile is transposed into a small class-major scratch, so that every later
loop runs along rows with unit stride and no data-dependent branch (compare-and-select only),
which LLVM vectorises (AVX-512: 16 rows per instruction). Against that copy-and-loops path at
2-8 classes (2026-12-07, AVX-512 EPYC, same arrays, outputs identical): 1.15-1.49x without
member details, 1.5-2.3x with them (the slices of the output writes count there, below).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import simd
from .kernels_cpu import GROUP_AHEAD, SHARE_TOL, TILE, agreeing_weight, count_equal, first_non_finite


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


@njit(inline="always")
def _group_vote(x, offset, classes, column, soft, shares, stride, w, t, own, confidence, check, probs_in, hard):  # pragma: no cover - compiled
    """`simd.group_vote` with the class count (2-8) a literal, as `_copy_tile` does."""
    if classes == 2:
        simd.group_vote(x, offset, 2, column, soft, shares, stride, w, t, own, confidence, check, probs_in, hard)
    elif classes == 3:
        simd.group_vote(x, offset, 3, column, soft, shares, stride, w, t, own, confidence, check, probs_in, hard)
    elif classes == 4:
        simd.group_vote(x, offset, 4, column, soft, shares, stride, w, t, own, confidence, check, probs_in, hard)
    elif classes == 5:
        simd.group_vote(x, offset, 5, column, soft, shares, stride, w, t, own, confidence, check, probs_in, hard)
    elif classes == 6:
        simd.group_vote(x, offset, 6, column, soft, shares, stride, w, t, own, confidence, check, probs_in, hard)
    elif classes == 7:
        simd.group_vote(x, offset, 7, column, soft, shares, stride, w, t, own, confidence, check, probs_in, hard)
    else:
        simd.group_vote(x, offset, 8, column, soft, shares, stride, w, t, own, confidence, check, probs_in, hard)


@njit(inline="always")
def _member_groups(flat, m, o, n, classes, soft, shares, w, t, own, confidence, check, probs_in, hard, pad):  # pragma: no cover - compiled
    """Member m's vote on a tile's n rows ``flat[m, o:o + n * classes]`` of 2-8 classes,
    `simd.GROUP` rows a call, prefetching `GROUP_AHEAD` rows ahead in reading order (member m's
    tile, then the next member's, then member 0's next tile). The last rows of a tile that does
    not end on a group go through `pad`, zeros past them (their results land in scratch columns
    past n, which nothing reads)."""
    xm = flat[m]
    flat_soft = soft.reshape(-1)
    flat_shares = shares.reshape(-1)
    stride = soft.shape[1]
    whole = n - n % simd.GROUP
    for g in range(0, whole, simd.GROUP):
        ahead = g + GROUP_AHEAD  # a group's rows span `classes` cache lines
        if ahead < n:
            for k in range(classes):
                simd.prefetch(xm, o + ahead * classes + 16 * k)
        elif m + 1 < flat.shape[0]:
            for k in range(classes):
                simd.prefetch(flat[m + 1], o + (ahead - n) * classes + 16 * k)
        else:
            for k in range(classes):
                simd.prefetch(flat[0], o + ahead * classes + 16 * k)
        _group_vote(xm, o + g * classes, classes, g, flat_soft, flat_shares, stride, w, t, own, confidence, check,
                    probs_in, hard)
    if whole < n:
        rest = (n - whole) * classes
        for i in range(pad.shape[0]):
            pad[i] = xm[o + whole * classes + i] if i < rest else np.float32(0.0)
        _group_vote(pad, 0, classes, whole, flat_soft, flat_shares, stride, w, t, own, confidence, check, probs_in,
                    hard)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def vote_tiles(x, start, stop, probs_in, hard, weight, inv_temp, labels, scores, confidence, agreement,
               member_labels, member_confidence, member_start, equal_partial, bad, details):  # pragma: no cover - compiled
    """Rows [start, stop) of the C-contiguous (members, all_rows, classes) `x`; the outputs
    hold those rows only (output row 0 is input row `start`).

    At 2-8 classes each member's tile goes through `simd.group_vote`, 16 rows a call; above,
    through the transposing copy and loops along rows. Every inner loop runs over the rows of
    a tile and touches at most three or four arrays: with more, LLVM gives up the runtime
    overlap checks it needs to vectorise (numba cannot tell it that the scratch arrays never
    overlap), and the loop runs one row at a time. Outputs are written through slices: an
    index such as ``t0 + r`` that numba cannot prove non-negative gets a wrap-around check,
    which LLVM vectorises as a scatter.
    """
    members, all_rows, classes = x.shape
    flat = x.reshape(members, all_rows * classes)
    rows = stop - start
    blocks = equal_partial.shape[0]
    per_block = (rows + blocks - 1) // blocks
    zero = np.float32(0.0)
    full = ~np.uint64(0)
    grouped = 2 <= classes <= simd.GROUP_CLASSES
    for b in prange(blocks):
        xt = np.empty((classes, TILE), np.float32)  # one member's tile, class-major
        soft = np.zeros((classes, TILE), np.float32)
        shares = np.zeros((classes, TILE), np.float32)
        own = np.empty((members, TILE), np.int16)  # labels (< MAX_CLASSES): 32 a vector for `count_equal`
        bits = np.empty((TILE // 64, members), np.uint64)  # two classes: labels as bits, 64 rows a word
        pad = np.zeros(simd.GROUP * classes, np.float32)
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
                own_m = own[m]
                o = (start + t0) * classes
                if grouped:  # label to own_m, confidence to best
                    _member_groups(flat, m, o, n, classes, soft, shares, w, inv_temp[m], own_m, best, check, probs_in,
                                   hard, pad)
                else:
                    # the member's tile, xm[o:o + n * classes] row-major, into the class-major scratch
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
                        for r in range(n):
                            best[r] = total[r]  # the confidence: exp(0) / sum
                    for r in range(n):
                        own_m[r] = arg[r]
                    if hard:
                        for c in range(classes):
                            shares_c = shares[c]
                            for r in range(n):
                                shares_c[r] += w if arg[r] == c else zero
                if details:
                    mc = member_confidence[m][member_start + t0:member_start + t0 + n]
                    for r in range(n):
                        mc[r] = best[r]
                    ml = member_labels[m][member_start + t0:member_start + t0 + n]
                    for r in range(n):
                        ml[r] = own_m[r]
                if classes == 2:  # rows past n cleared (stale, though the same for every member)
                    for k in range(words):
                        bits[k, m] = simd.nonzero64(own_m, k * 64) & (tail if k == words - 1 else full)
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
            tile_labels = labels[t0:t0 + n]
            tile_confidence = confidence[t0:t0 + n]
            tile_agreement = agreement[t0:t0 + n]
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
                    tile_labels[r] = label[r]
                for r in range(n):
                    tile_confidence[r] = top[r]
                    tile_agreement[r] = top[r]  # the label's share is the agreeing weight
                _copy_tile(scores[t0 * classes:(t0 + n) * classes], shares, n, classes, True)
            else:
                _argmax_rows(soft, n, top, label)
                agreeing_weight(own, weight, label, n, total)
                for r in range(n):
                    tile_labels[r] = label[r]
                for r in range(n):
                    tile_confidence[r] = top[r]
                    tile_agreement[r] = total[r]
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
