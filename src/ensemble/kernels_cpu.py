"""The fused CPU vote: one parallel pass over the logits, every output written once.

Eager torch needs a dozen passes for a vote, and its reductions over a small class dimension
are slow (a softmax over 5 classes costs ten times an `exp` of the same tensor). Two numba
kernels, chosen by `row_lanes` from the class count (and the CPU's vector width), compute the same outputs with the same
tie-breaks:

- `_vote` walks the rows in tiles of `TILE`. Each member's tile (TILE x classes values, one
  contiguous block of the input) is read once, transposed on the way into a small class-major
  scratch that stays in L1, so that every later loop runs along rows with unit stride and no
  data-dependent branch (compare-and-select only), which LLVM vectorises (AVX-512: 16 rows per
  instruction). Best at 2-8 classes, where the transposing copy has a constant stride.
- `_vote_rows` keeps each row of a member as one vector of 8, 16 or 32 lanes (`simd`): no
  transpose, the reductions over a row's classes are shuffle trees, and it prefetches ahead.
  Best from 9 classes on AVX-512 CPUs, from 5 (probabilities) on AVX2 ones.

From that one read come the member argmax and confidence, the temperature softmax (through
`simd.exp`, a branch-free float32 exp that vectorises: numba has no vector `exp` without Intel's
SVML), weighted soft scores, hard vote shares, the tie-broken label, agreement and the member x
member equal-prediction counts (one partial table per thread block, summed at the end; 64 rows
per popcount of a word of equal-label bits, which made 16-member votes 1.33x (two classes) and
1.09x (five) faster than a compare-and-add per row).

It follows `aggregate`'s tie-breaking rules exactly: sums run in member order and identical
inputs go through identical float32 arithmetic, so they tie exactly.

Bytes per row: read members*classes*itemsize; write classes*4 (scores) + 8 (label) +
4 (confidence) + 4 (agreement) + members*(8 + 4) (member labels and confidences; only with
member details).
"""

from __future__ import annotations

import functools

import numpy as np

from . import simd

try:
    import numba
    from numba import literally, njit, prange
except ImportError:  # pragma: no cover - numba is a dependency; this keeps the torch fallback usable
    numba = None

SHARE_TOL = 1e-6  # float32 vote shares: sums such as 0.2 + 0.3 vs 0.5 differ by rounding only
TILE = 512  # rows per tile: classes x TILE float32 scratch arrays stay in L1 (L2 for many classes)
ROW_TILE = 128  # rows per tile of `_vote_rows`: its rows of soft sums (16 KB at 32 lanes) stay in L1
AHEAD = 32  # rows `_vote_rows` prefetches ahead of its reads (24-96 measured alike; none: 0.7x)
if TILE % 64 or ROW_TILE % 64 or ROW_TILE > TILE:  # the 64-row reads of `simd.equal64` stay in a tile
    raise AssertionError("kernels_cpu.TILE and ROW_TILE must be multiples of 64, ROW_TILE <= TILE")


def available() -> bool:
    return numba is not None


def row_lanes(classes: int, probs_in: bool) -> int:
    """The row-vector width `_vote_rows` votes with (8, 16 or 32 lanes), or 0 for `_vote`'s tiles.

    Measured on both kernels (`benchmarks/aggregate.py`, outputs identical). On a 2-core AVX-512
    VM (Sapphire Rapids): with 32 lanes, probabilities 1.1-1.3x faster at 9-12 classes and
    1.5-1.8x at 20; logits 0.5-0.6x at 9-12 classes, level at 20, 1.9x at 32; at 2-8 classes
    the tiles 2-4x faster (narrower rows were not measured there, so that CPU keeps this choice).
    On a 2-core AVX2 VM (AMD EPYC) a row is best held in the narrowest of 8, 16 or 32 lanes:
    probabilities of 5-8 classes in 8 lanes 1.2-2.2x faster than the tiles (at 2-4 classes
    0.4-0.9x), 9-16 classes in 16 lanes 1.4-1.7x the 32-lane rows; logits from 12 classes
    1.2-1.4x (level at 10, 0.7x at 5-6).

    Example:
        >>> row_lanes(20, probs_in=True)
        32
    """
    if _avx512():
        return simd.LANES if (9 if probs_in else 17) <= classes <= simd.LANES else 0
    if not (5 if probs_in else 12) <= classes <= simd.LANES:
        return 0
    return next(width for width in simd.WIDTHS if classes <= width)


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
    def _first_non_finite(x, row, n):  # pragma: no cover - compiled
        """The first of rows [row, row + n) of `x` holding a value that is not finite, or -1."""
        for r in range(row, row + n):
            for m in range(x.shape[0]):
                for c in range(x.shape[2]):
                    if not np.isfinite(x[m, r, c]):
                        return r
        return -1

    @njit(inline="always")
    def _agreeing_weight(own, weight, label, n, total):  # pragma: no cover - compiled
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
    def _count_equal(own, n, same):  # pragma: no cover - compiled
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

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _vote(x, start, stop, probs_in, hard, weight, inv_temp, labels, scores, confidence, agreement,
              member_labels, member_confidence, equal_partial, bad, details):  # pragma: no cover - compiled
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
                                mc[t0 + r] = best[r]
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
                                mc[t0 + r] = total[r]  # exp(0) / sum
                    if details:
                        ml = member_labels[m]
                        for r in range(n):
                            ml[t0 + r] = arg[r]
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
                    bad[b] = _first_non_finite(x, start + t0, n)
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
                    _agreeing_weight(own, weight, label, n, total)
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
                    _count_equal(own, n, same)


    @njit(inline="always")
    def _prefetch_ahead(flat, m, o, r, n, classes):  # pragma: no cover - compiled
        """Prefetch the row `AHEAD` rows on in `_vote_rows`'s reading order: member m's tile rows
        from offset o, then the next member's, then member 0's next tile."""
        ahead = r + AHEAD
        if ahead < n:
            simd.prefetch(flat[m], o + ahead * classes)
        elif m + 1 < flat.shape[0]:
            simd.prefetch(flat[m + 1], o + (ahead - n) * classes)
        else:
            simd.prefetch(flat[0], o + ahead * classes)

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _vote_rows(x, start, stop, probs_in, hard, weight, inv_temp, labels, scores, confidence, agreement,
                   member_labels, member_confidence, equal_partial, bad, details, lanes):  # pragma: no cover - compiled
        """`_vote`, row by row, each row of up to `lanes` classes one vector: the same outputs and
        tie-breaks. `lanes` (8, 16 or 32) is compiled in: one specialisation per width.

        Each member's row is one vector (`simd`): its argmax, confidence and (for logits)
        softmax come from one masked load and a few shuffle-tree reductions, and it is added
        into row-major soft sums (`lanes` floats a row, so no row straddles another's
        vector). No tile is transposed, which is what `_vote` spends half its time on at 20
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
            own = np.empty((members, TILE), np.int32)
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
                    if details:
                        ml = member_labels[m]
                        mc = member_confidence[m]
                        for r in range(n):
                            ml[t0 + r] = own_m[r]
                        for r in range(n):
                            mc[t0 + r] = total[r]
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
                    bad[b] = _first_non_finite(x, start + t0, n)
                if hard:
                    for r in range(n):
                        labels[t0 + r] = label[r]
                        confidence[t0 + r] = top[r]
                        agreement[t0 + r] = top[r]
                    for r in range(n):
                        simd.row_store(scores, (t0 + r) * classes, shares, r * lanes, classes, lanes)
                else:
                    _agreeing_weight(own, weight, label, n, total)
                    for r in range(n):
                        labels[t0 + r] = label[r]
                        confidence[t0 + r] = top[r]
                        agreement[t0 + r] = total[r]
                    for r in range(n):
                        simd.row_store(scores, (t0 + r) * classes, soft, r * lanes, classes, lanes)
                _count_equal(own, n, same)


def fused_vote(x: np.ndarray, method: str, weight: np.ndarray, temperature: np.ndarray,
               probs_in: bool = False, out: dict[str, np.ndarray] | None = None,
               member_details: bool = True, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """Vote rows [start, stop) of one float32 (members, rows, classes) array in one parallel pass.

    Returns the same keys as `aggregate._vote_chunk` (numpy arrays) plus ``bad_row``: the index
    (relative to `start`) of the first row found with a non-finite value, or -1. `out` may hold
    preallocated output arrays for those rows (views into the caller's final arrays), which are
    then written in place. Passing the whole array with a row range, rather than a row slice,
    keeps the kernel on contiguous memory without a copy.
    """
    if not x.flags.c_contiguous:
        x = x[:, start:stop]
        start, stop = 0, None
        x = np.ascontiguousarray(x)
    stop = x.shape[1] if stop is None else stop
    members, _, classes = x.shape
    rows = stop - start
    blocks = max(1, min((rows + TILE - 1) // TILE, 4 * numba.get_num_threads()))
    out = dict(out or {})
    shapes = {"labels": ((rows,), np.int64), "scores": ((rows, classes), np.float32),
              "confidence": ((rows,), np.float32), "agreement": ((rows,), np.float32),
              "member_labels": ((members, rows), np.int64), "member_confidence": ((members, rows), np.float32)}
    for key, (shape, dtype) in shapes.items():
        if key not in out:
            # without member details the kernel never writes them: a 1-row placeholder suffices
            out[key] = np.empty((members, 1) if key.startswith("member") and not member_details else shape, dtype)
    partial = np.zeros((blocks, members, members), np.int64)
    bad = np.full(blocks, -1, np.int64)
    scores = out["scores"].reshape(-1)  # the kernel writes row-major scores through a flat view
    if not np.shares_memory(scores, out["scores"]):  # pragma: no cover - callers pass contiguous rows
        raise ValueError("fused_vote needs a C-contiguous 'scores' output")
    args = (x, start, stop, probs_in, method == "hard", weight.astype(np.float32), (1.0 / temperature).astype(np.float32),
            out["labels"], scores, out["confidence"], out["agreement"], out["member_labels"], out["member_confidence"],
            partial, bad, member_details)
    lanes = row_lanes(classes, probs_in)
    if lanes:
        _rows_kernel(args, lanes)(*args, lanes)
    else:
        _vote(*args)
    equal = partial.sum(axis=0)
    out["equal_counts"] = equal + equal.T + np.diag(np.full(members, rows, np.int64))
    out["bad_row"] = int(bad[bad >= 0].min()) - start if (bad >= 0).any() else -1
    if not member_details:
        out.pop("member_labels"), out.pop("member_confidence")
    return out


def _rows_kernel(args: tuple, lanes: int):
    """`_vote_rows`'s compiled specialisation for these arguments and `lanes`.

    Called through its dispatcher, a function that asks for a literal argument is typed again on
    every call (the plain-int attempt fails before the literal one is found): 0.2 s a call here,
    so once compiled (or loaded from the disk cache) the specialisation is called directly.
    """
    key = tuple(numba.typeof(a) for a in args) + (numba.types.literal(lanes),)
    compiled = _vote_rows.overloads.get(key)
    if compiled is None:
        return _vote_rows  # the first call: types, then compiles or loads the specialisation
    return compiled.entry_point
