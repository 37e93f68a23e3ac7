"""The fused CPU vote: one parallel pass over the logits, every output written once.

Eager torch needs a dozen passes for a vote, and its reductions over a small class dimension
are slow (a softmax over 5 classes costs ten times an `exp` of the same tensor). This numba
kernel walks the rows in tiles of `TILE`. Each member's tile (TILE x classes values, one
contiguous block of the input) is read once, transposed on the way into a small class-major
scratch that stays in L1, so that every later loop runs along rows with unit stride and no
data-dependent branch (compare-and-select only), which LLVM vectorises (AVX-512: 16 rows per
instruction). From that one read come the member argmax and confidence, the temperature
softmax (through `_exp`, a branch-free float32 exp that vectorises: numba has no vector `exp`
without Intel's SVML), weighted soft scores, hard vote shares, the tie-broken label, agreement
and the member x member equal-prediction counts (one partial table per thread block, summed at
the end; 64 rows per popcount of a word of equal-label bits, which made 16-member votes 1.33x
(two classes) and 1.09x (five) faster than a compare-and-add per row).

It follows `aggregate`'s tie-breaking rules exactly: sums run in member order and identical
inputs go through identical float32 arithmetic, so they tie exactly.

Bytes per row: read members*classes*itemsize; write classes*4 (scores) + 8 (label) +
4 (confidence) + 4 (agreement) + members*(8 + 4) (member labels and confidences; only with
member details).
"""

from __future__ import annotations

import numpy as np

try:
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - numba is a dependency; this keeps the torch fallback usable
    numba = None

SHARE_TOL = 1e-6  # float32 vote shares: sums such as 0.2 + 0.3 vs 0.5 differ by rounding only
TILE = 512  # rows per tile: classes x TILE float32 scratch arrays stay in L1 (L2 for many classes)
if TILE % 64:  # the 64-row vector reads of `_nonzero64` / `_equal64` must stay inside a tile
    raise AssertionError("kernels_cpu.TILE must be a multiple of 64")


def available() -> bool:
    return numba is not None


if numba is not None:

    @intrinsic
    def _scale_by_pow2(typingctx, t, p):  # pragma: no cover - compiled
        """``p * 2**k`` for the float32 ``t = k + 1.5 * 2**23`` (k an integer in [-126, 127]).

        The "round by adding 1.5 * 2**23" trick leaves k in the low mantissa bits of t, so 2**k
        is t's bit pattern shifted left by 23 plus a constant: two integer ops on the bits, which
        (unlike `math.ldexp`) vectorise.
        """
        sig = types.float32(types.float32, types.float32)

        def codegen(context, builder, signature, args):
            i32 = ir.IntType(32)
            bits = builder.bitcast(args[0], i32)
            # (bits - bits(1.5 * 2**23) + 127) << 23, modulo 2**32
            exponent = builder.add(builder.shl(bits, ir.Constant(i32, 23)),
                                   ir.Constant(i32, ((127 - 0x4B400000) << 23) & 0xFFFFFFFF))
            return builder.fmul(args[1], builder.bitcast(exponent, ir.FloatType()))

        return sig, codegen

    @intrinsic
    def _popcount(typingctx, x):  # pragma: no cover - compiled
        """The number of set bits of a uint64 (one ``popcnt`` instruction), as an int64."""
        sig = types.int64(types.uint64)

        def codegen(context, builder, signature, args):
            return builder.ctpop(args[0])

        return sig, codegen

    def _load64(context, builder, arrty, arr, offset):  # pragma: no cover - compiled
        """LLVM IR: the 64 int32 values of array `arr` from `offset` as one <64 x i32> vector."""
        data = context.make_array(arrty)(context, builder, arr).data
        vec = ir.VectorType(ir.IntType(32), 64)
        return builder.load(builder.bitcast(builder.gep(data, [offset]), vec.as_pointer()), align=4)

    @intrinsic
    def _nonzero64(typingctx, arr, offset):  # pragma: no cover - compiled
        """A uint64 whose bit k says ``arr[offset + k] != 0``, k < 64 (`arr`: contiguous int32 with
        64 values from `offset`).

        One 64-lane vector compare whose one-bit results are the word: AVX-512 does it in a few
        mask-register instructions, where a loop of shifts and ORs builds it one bit at a time
        (numba has no other way to turn a vector of booleans into a bitmask).
        """
        sig = types.uint64(arr, types.intp)

        def codegen(context, builder, signature, args):
            values = _load64(context, builder, signature.args[0], args[0], args[1])
            return builder.bitcast(builder.icmp_signed("!=", values, ir.Constant(values.type, [0] * 64)), ir.IntType(64))

        return sig, codegen

    @intrinsic
    def _equal64(typingctx, a, b, offset):  # pragma: no cover - compiled
        """A uint64 whose bit k says ``a[offset + k] == b[offset + k]``, k < 64 (`a`, `b`:
        contiguous int32 with 64 values from `offset`): two 64-lane vector loads and a compare,
        as `_nonzero64`."""
        sig = types.uint64(a, b, types.intp)

        def codegen(context, builder, signature, args):
            a = _load64(context, builder, signature.args[0], args[0], args[2])
            b = _load64(context, builder, signature.args[1], args[1], args[2])
            return builder.bitcast(builder.icmp_signed("==", a, b), ir.IntType(64))

        return sig, codegen

    @njit(inline="always")
    def _exp(x):  # pragma: no cover - compiled
        """float32 ``exp(x)`` for ``x <= 0``, within 2 ulp; 0 below -87 (where exp < 1.7e-38).

        Cody-Waite reduction x = k ln2 + r, |r| <= ln2 / 2, and Cephes' degree-6 polynomial for
        exp(r). Branch-free (selects only), so a loop of it vectorises; the same input always
        gives the same output, so exact ties stay exact.
        """
        y = max(x, np.float32(-87.0))
        t = y * np.float32(1.44269504) + np.float32(12582912.0)  # round(y / ln2) + 1.5 * 2**23
        k = t - np.float32(12582912.0)
        r = y - k * np.float32(0.693359375)
        r = r - k * np.float32(-2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        p = p * (r * r) + r + np.float32(1.0)
        e = _scale_by_pow2(t, p)
        return np.float32(0.0) if x < np.float32(-87.0) else e

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
            same = np.zeros((members, members), np.int64)
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
                                e = _exp((xc[r] - best[r]) * t)
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
                            bits[k, m] = _nonzero64(arg, k * 64) & (tail if k == words - 1 else full)
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
                    for r in range(n):
                        for m in range(members):
                            for c in range(classes):
                                if not np.isfinite(x[m, start + t0 + r, c]) and bad[b] < 0:
                                    bad[b] = start + t0 + r
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
                    for r in range(n):
                        total[r] = zero
                    for m in range(members):
                        w = weight[m]
                        own_m = own[m]
                        for r in range(n):
                            total[r] += w if own_m[r] == label[r] else zero
                    for r in range(n):
                        labels[t0 + r] = label[r]
                    for r in range(n):
                        confidence[t0 + r] = top[r]
                        agreement[t0 + r] = total[r]
                    _copy_tile(scores[t0 * classes:(t0 + n) * classes], soft, n, classes, True)
                # the member x member equal-prediction counts, 64 rows per popcount: with two classes
                # of the differing label bits (packed once per member), else of a 64-lane compare
                for i in range(members):
                    own_i = own[i]
                    same_i = same[i]
                    for j in range(i + 1, members):
                        count = 0
                        if classes == 2:
                            count = n
                            for k in range(words):
                                count -= _popcount(bits[k, i] ^ bits[k, j])
                        else:
                            own_j = own[j]  # rows past n hold other tiles' labels: masked off
                            for k in range(words):
                                count += _popcount(_equal64(own_i, own_j, k * 64) & (tail if k == words - 1 else full))
                        same_i[j] += count
            for i in range(members):
                for j in range(i + 1, members):
                    equal_partial[b, i, j] = same[i, j]


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
    _vote(x, start, stop, probs_in, method == "hard", weight.astype(np.float32),
          (1.0 / temperature).astype(np.float32), out["labels"], scores, out["confidence"],
          out["agreement"], out["member_labels"], out["member_confidence"], partial, bad, member_details)
    equal = partial.sum(axis=0)
    out["equal_counts"] = equal + equal.T + np.diag(np.full(members, rows, np.int64))
    out["bad_row"] = int(bad[bad >= 0].min()) - start if (bad >= 0).any() else -1
    if not member_details:
        out.pop("member_labels"), out.pop("member_confidence")
    return out
