"""The fused CPU vote: one parallel pass over the logits, every output written once.

Eager torch needs a dozen passes for a vote, and its reductions over a small class dimension
are slow (a softmax over 5 classes costs ten times an `exp` of the same tensor). This numba
kernel walks the rows in tiles of `TILE`: each member's (tile x classes) block is copied once
into a small class-major scratch that stays in L1, so every inner loop runs along rows with
unit stride (and vectorises); member argmax and confidence, temperature softmax, weighted soft
scores, hard vote shares, the tie-broken label, agreement and the member x member
equal-prediction counts (one partial table per thread block, summed at the end) all come from
that one read. It follows `aggregate`'s tie-breaking rules exactly: sums run in member order
and identical inputs go through identical float32 arithmetic, so they tie exactly.

Bytes per row: read members*classes*itemsize; write classes*4 (scores) + 8 (label) +
4 (confidence) + 4 (agreement) + members*(8 + 4) (member labels and confidences).
"""

from __future__ import annotations

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - numba is a dependency; this keeps the torch fallback usable
    numba = None

SHARE_TOL = 1e-6  # float32 vote shares: sums such as 0.2 + 0.3 vs 0.5 differ by rounding only
TILE = 256  # rows per tile: classes x TILE float32 scratch arrays stay in L1


def available() -> bool:
    return numba is not None


if numba is not None:

    @njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _vote(x, probs_in, hard, weight, inv_temp, labels, scores, confidence, agreement,
              member_labels, member_confidence, equal_partial, bad, details):  # pragma: no cover - compiled
        members, rows, classes = x.shape
        blocks = equal_partial.shape[0]
        per_block = (rows + blocks - 1) // blocks
        zero = np.float32(0.0)
        for b in prange(blocks):
            xt = np.empty((classes, TILE), np.float32)  # one member's tile, class-major
            soft = np.empty((classes, TILE), np.float32)
            shares = np.empty((classes, TILE), np.float32)
            own = np.empty((members, TILE), np.int64)
            best = np.empty(TILE, np.float32)
            arg = np.empty(TILE, np.int64)
            total = np.empty(TILE, np.float32)
            check = np.empty(TILE, np.float32)
            label = np.empty(TILE, np.int64)
            top = np.empty(TILE, np.float32)
            end = min(rows, (b + 1) * per_block)
            for t0 in range(b * per_block, end, TILE):
                n = min(TILE, end - t0)
                for c in range(classes):
                    for r in range(n):
                        soft[c, r] = zero
                        shares[c, r] = zero
                for m in range(members):
                    w = weight[m]
                    for r in range(n):
                        for c in range(classes):
                            xt[c, r] = x[m, t0 + r, c]
                    # member argmax on the raw values: the first maximum wins
                    for r in range(n):
                        best[r] = xt[0, r]
                        arg[r] = 0
                        check[r] = xt[0, r]
                    for c in range(1, classes):
                        for r in range(n):
                            v = xt[c, r]
                            check[r] += v  # NaN or infinity anywhere makes the sum non-finite
                            if v > best[r]:
                                best[r] = v
                                arg[r] = c
                    for r in range(n):
                        if not np.isfinite(check[r]) and bad[b] < 0:
                            bad[b] = t0 + r
                    if probs_in:
                        for c in range(classes):
                            for r in range(n):
                                soft[c, r] += w * xt[c, r]
                        if details:
                            for r in range(n):
                                member_confidence[m, t0 + r] = best[r]
                    else:
                        t = inv_temp[m]
                        for r in range(n):
                            total[r] = zero
                        for c in range(classes):
                            for r in range(n):
                                e = np.float32(np.exp((xt[c, r] - best[r]) * t))
                                xt[c, r] = e
                                total[r] += e
                        for c in range(classes):
                            for r in range(n):
                                soft[c, r] += w * (xt[c, r] / total[r])
                        if details:
                            for r in range(n):
                                member_confidence[m, t0 + r] = np.float32(1.0) / total[r]
                    if details:
                        for r in range(n):
                            member_labels[m, t0 + r] = arg[r]
                    for r in range(n):
                        own[m, r] = arg[r]
                        shares[arg[r], r] += w
                # the ensemble label, with the documented tie-breaks
                if hard:
                    for r in range(n):
                        top[r] = shares[0, r]
                    for c in range(1, classes):
                        for r in range(n):
                            top[r] = max(top[r], shares[c, r])
                    for r in range(n):
                        label[r] = -1
                    for c in range(classes):
                        for r in range(n):
                            if shares[c, r] >= top[r] - SHARE_TOL and (label[r] < 0 or soft[c, r] > soft[label[r], r]):
                                label[r] = c
                    for r in range(n):
                        labels[t0 + r] = label[r]
                        confidence[t0 + r] = shares[label[r], r]
                        for c in range(classes):
                            scores[t0 + r, c] = shares[c, r]
                else:
                    for r in range(n):
                        label[r] = 0
                        top[r] = soft[0, r]
                    for c in range(1, classes):
                        for r in range(n):
                            if soft[c, r] > top[r]:
                                top[r] = soft[c, r]
                                label[r] = c
                    for r in range(n):
                        labels[t0 + r] = label[r]
                        confidence[t0 + r] = top[r]
                        for c in range(classes):
                            scores[t0 + r, c] = soft[c, r]
                for r in range(n):
                    total[r] = zero
                for m in range(members):
                    w = weight[m]
                    for r in range(n):
                        if own[m, r] == label[r]:
                            total[r] += w
                for r in range(n):
                    agreement[t0 + r] = total[r]
                for i in range(members):
                    for j in range(i + 1, members):
                        same = 0
                        for r in range(n):
                            if own[i, r] == own[j, r]:
                                same += 1
                        equal_partial[b, i, j] += same


def fused_vote(x: np.ndarray, method: str, weight: np.ndarray, temperature: np.ndarray,
               probs_in: bool = False, out: dict[str, np.ndarray] | None = None,
               member_details: bool = True) -> dict[str, np.ndarray]:
    """Vote one float32 (members, rows, classes) array in a single parallel pass.

    Returns the same keys as `aggregate._vote_chunk` (numpy arrays) plus ``bad_row``: the index
    of the first row found with a non-finite value, or -1. `out` may hold preallocated output
    arrays (views into the caller's final arrays), which are then written in place.
    """
    members, rows, classes = x.shape
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
    _vote(x, probs_in, method == "hard", weight.astype(np.float32), (1.0 / temperature).astype(np.float32),
          out["labels"], out["scores"], out["confidence"], out["agreement"], out["member_labels"],
          out["member_confidence"], partial, bad, member_details)
    equal = partial.sum(axis=0)
    out["equal_counts"] = equal + equal.T + np.diag(np.full(members, rows, np.int64))
    out["bad_row"] = int(bad[bad >= 0].min()) if (bad >= 0).any() else -1
    if not member_details:
        out.pop("member_labels"), out.pop("member_confidence")
    return out
