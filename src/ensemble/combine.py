"""Smarter combining: calibrate members, learn how far to trust each, stack them, abstain.

Arrays: ``logits`` / ``probs`` are (members M, rows N, classes C), ``probs2d`` is (N, C), ``y`` is
int (N,). All float64 and deterministic; fit on a validation split, never the train split.

* `softmax`, `nll`, `ece`: probabilities and the two scores used to judge them.
* `fit_temperatures`: one temperature per member (temperature scaling, Guo et al. 2017).
* `fit_weights`: member weights on the simplex minimising the log-loss of the weighted mean.
* `caruana_selection`: greedy ensemble selection with replacement (Caruana et al. 2004).
* `coverage_curve`, `abstain_mask`, `abstain_threshold`: answer only the confident rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from .errors import EnsembleError

__all__ = ["abstain_mask", "abstain_threshold", "caruana_selection", "coverage_curve", "ece",
           "fit_temperatures", "fit_weights", "nll", "softmax"]

# Probability floor before taking logs: a confidently wrong member costs log(1e12) ~ 27.6 nats
# instead of infinity, so one bad row cannot swamp a mean.
_EPS = 1e-12
# Temperature search range; beyond it a member is either useless or already one-hot.
_T_BOUNDS = (0.05, 20.0)
# Fitted weights below this carry no measurable signal; zeroing them keeps weights readable.
_PRUNE = 1e-4
# Relative gap under which two candidate losses count as tied: it absorbs float rounding of
# sums taken in different orders, not real differences.
_TIE_TOL = 1e-12


def _floats(name: str, value, ndim: int, probs: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise EnsembleError(f"'{name}' must be a numeric array; got {type(value).__name__}") from None
    layout = {1: "(rows,)", 2: "(rows, classes)", 3: "(members, rows, classes)"}[ndim]
    if arr.ndim != ndim or (ndim > 1 and 0 in (arr.shape[0], arr.shape[-1])):
        raise EnsembleError(f"'{name}' must be a non-empty {layout} array; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise EnsembleError(f"'{name}' contains NaN or infinite values")
    if probs and np.any(arr < 0):
        raise EnsembleError(f"'{name}' holds probabilities and must be >= 0; got {arr.min()}")
    return arr


def _labels(y, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(y)
    n_rows, n_classes = shape[-2], shape[-1]
    if arr.shape != (n_rows,):
        raise EnsembleError(f"'y' has shape {arr.shape} but '{name}' has shape {shape}; "
                            f"expected one label per row, shape ({n_rows},)")
    if n_rows == 0:
        raise EnsembleError("'y' is empty; need at least one labelled row")
    if not np.issubdtype(arr.dtype, np.integer):
        raise EnsembleError(f"'y' must hold integer class indices (positions in the ensemble's labels); got dtype "
                            f"{arr.dtype}: map label names with [ens.labels.index(v) for v in y]")
    if arr.min() < 0 or arr.max() >= n_classes:
        bad = arr[(arr < 0) | (arr >= n_classes)][0]
        raise EnsembleError(f"'y' must hold class indices in [0, {n_classes}); got {bad}")
    return arr.astype(np.int64)


def _int_param(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise EnsembleError(f"the '{name}' parameter must be an int >= {minimum}; got {value!r}")
    return int(value)


def _softmax_last(z: np.ndarray, t=1.0) -> np.ndarray:
    """softmax(z / t) over the last axis. Shifted before the division: z / 1e-308 overflows to inf
    (and NaN), (z - max) / t cannot; a tiny t sends the others to -inf, probability 0, as meant."""
    with np.errstate(over="ignore"):
        e = np.exp((z - z.max(axis=-1, keepdims=True)) / t)
    return e / e.sum(axis=-1, keepdims=True)


def softmax(logits, temperatures=None) -> np.ndarray:
    """Turn member logits into probabilities (max-shifted, so large logits cannot overflow).

    Args:
        logits: (members, rows, classes) floats.
        temperatures: optional (members,) floats > 0 dividing each member's logits.

    Example:
        >>> softmax(np.array([[[0.0, 2 * np.log(3.0)]]]), temperatures=[2.0])
        array([[[0.25, 0.75]]])
    """
    z = _floats("logits", logits, 3)
    if temperatures is not None:
        t = _floats("temperatures", temperatures, 1)
        if t.shape != (z.shape[0],):
            raise EnsembleError(f"'temperatures' has shape {t.shape} but 'logits' has shape {z.shape}")
        if np.any(t <= 0):
            raise EnsembleError(f"'temperatures' must be > 0; got {t.min()}")
        return _softmax_last(z, t[:, None, None])
    return _softmax_last(z)


def soften(probs2d, temperature: float) -> np.ndarray:
    """Rescale probabilities by a temperature: ``softmax(log p / T)``; argmax and ties are kept.

    Averaging calibrated members makes an under-confident ensemble; one temperature on the
    averaged probabilities (fitted like a member's, see `fit_temperatures`) puts that right.

    Example:
        >>> soften(np.array([[0.25, 0.75]]), 0.5)
        array([[0.1, 0.9]])
    """
    p = _floats("probs", probs2d, 2, probs=True)
    if not (np.isfinite(temperature) and temperature > 0):
        raise EnsembleError(f"the 'temperature' parameter must be a finite number > 0; got {temperature!r}")
    return _softmax_last(np.log(np.clip(p, 1e-12, None)), temperature)


def nll(probs2d, y) -> float:
    """Mean negative log-likelihood of the true class (probabilities floored at 1e-12).

    Example:
        >>> round(nll([[0.5, 0.5], [0.2, 0.8]], [0, 1]), 6)  # -(ln 0.5 + ln 0.8) / 2
        0.458145
    """
    p = _floats("probs2d", probs2d, 2, probs=True)
    labels = _labels(y, p.shape, "probs2d")
    # + 0.0: a model certain of every row gives -0.0, which would print as "-0.0000"
    return float(-np.mean(np.log(np.clip(p[np.arange(labels.size), labels], _EPS, None)))) + 0.0


def ece(probs2d, y, bins: int = 15) -> float:
    """Expected calibration error over equal-width bins of the top probability.

    Bin b holds confidences in ``(b / bins, (b + 1) / bins]`` (so 1.0 is in the last bin); ECE
    sums ``share_of_rows * |accuracy - mean_confidence|`` over bins. Argmax ties -> lowest class.

    Example:
        >>> ece([[0.9, 0.1], [0.6, 0.4]], [0, 1], bins=2)  # bin 2: acc 0.5, conf 0.75
        0.25
    """
    bins = _int_param("bins", bins, 1)
    p = _floats("probs2d", probs2d, 2, probs=True)
    labels = _labels(y, p.shape, "probs2d")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    # ceil(conf * bins) - 1 is the (lo, hi] bin in exact arithmetic, without float edge arrays.
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.bincount(idx, correct, bins) - np.bincount(idx, conf, bins)
    # share * |acc - conf| per bin == |sum(correct) - sum(conf)| / N.
    return float(np.abs(gap).sum() / labels.size)


def fit_temperatures(logits, y) -> np.ndarray:
    """Fit one temperature per member by minimising that member's NLL on ``(logits, y)``.

    Searches log T with ``scipy.optimize.minimize_scalar(method="bounded")``, T in [0.05, 20].
    NLL is convex in 1/T, hence unimodal in log T, so the bounded search finds the optimum (a
    member right on every row improves as T -> 0 and gets ~0.05). The loss is the exact
    log-softmax (no 1e-12 floor) so it stays smooth. Returns (members,) temperatures.

    Example:
        >>> z = np.array([[[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]]])
        >>> t = fit_temperatures(z, np.array([0, 1, 0, 1]))  # 3 of 4 right: p(right) -> 3/4
        >>> round(float(softmax(z, t)[0, 0, 0]), 3)
        0.75
    """
    z = _floats("logits", logits, 3)
    labels = _labels(y, z.shape, "logits")
    rows = np.arange(labels.size)
    out = np.empty(z.shape[0])
    for m, zm in enumerate(z):
        def loss(log_t: float, zm: np.ndarray = zm) -> float:
            s = zm / np.exp(log_t)
            top = s.argmax(axis=1)
            s = s - s[rows, top][:, None]
            e = np.exp(s)
            e[rows, top] = 0.0  # log1p of the rest keeps tiny losses resolvable as T -> 0
            return float(np.mean(np.log1p(e.sum(axis=1)) - s[rows, labels]))

        res = minimize_scalar(loss, bounds=np.log(_T_BOUNDS), method="bounded", options={"xatol": 1e-7})
        out[m] = float(np.clip(np.exp(res.x), *_T_BOUNDS))
    return out


def fit_weights(probs, y) -> np.ndarray:
    """Member weights on the simplex minimising the log-loss of the weighted mean probability.

    Weights are ``softmax(a)``, fitted by L-BFGS from uniform (a = 0) with the analytic gradient;
    weights under 1e-4 become 0 and the rest are renormalised. The loss is convex in the weights,
    but a softmax only approaches a corner and pruning moves the point, so the best of {result,
    uniform, each single member} is returned: never worse on ``(probs, y)`` than any of them.

    Example:
        >>> truth = np.array([[[1.0, 0.0], [0.0, 1.0]]])
        >>> noise = np.array([[[0.5, 0.5], [0.7, 0.3]]])
        >>> fit_weights(np.concatenate([truth, noise]), np.array([0, 1]))
        array([1., 0.])
    """
    p = _floats("probs", probs, 3, probs=True)
    labels = _labels(y, p.shape, "probs")
    q = np.clip(p[:, np.arange(labels.size), labels], _EPS, None)  # (M, N) true-class probs
    n_members = q.shape[0]

    def loss(w: np.ndarray) -> float:
        return float(-np.mean(np.log(w @ q)))

    def loss_and_grad(a: np.ndarray) -> tuple[float, np.ndarray]:
        w = _softmax_last(a)
        mix = w @ q
        g_w = -(q / mix).mean(axis=1)
        return float(-np.mean(np.log(mix))), w * (g_w - w @ g_w)  # chain rule through softmax

    res = minimize(loss_and_grad, np.zeros(n_members), jac=True, method="L-BFGS-B",
                   options={"maxiter": 1000, "gtol": 1e-10})
    w = _softmax_last(res.x)
    w[w < _PRUNE] = 0.0
    w /= w.sum()
    candidates = [w, np.full(n_members, 1.0 / n_members), *np.eye(n_members)]
    return candidates[int(np.argmin([loss(c) for c in candidates]))].copy()


def caruana_selection(probs, y, rounds: int = 50,
                      metric: str = "log_loss") -> tuple[np.ndarray, list[int]]:
    """Greedy ensemble selection with replacement (Caruana et al. 2004, as in AutoGluon).

    From an empty ensemble, each of ``rounds`` rounds adds the member (repeats allowed) giving
    the best metric of the running mean probability. Ties go to the lowest member index; with
    ``metric="accuracy"`` equal accuracies are first broken by log-loss. Losses within a relative
    1e-12 count as equal. Returns ``(weights = pick counts / rounds, picks in order)``.

    Example:
        >>> a = [[0.6, 0.4], [0.6, 0.4]]; b = [[0.4, 0.6], [0.4, 0.6]]
        >>> w, picks = caruana_selection(np.array([a, b, a]), np.array([0, 1]), rounds=4)
        >>> picks, w.tolist()
        ([0, 1, 0, 1], [0.5, 0.5, 0.0])
    """
    rounds = _int_param("rounds", rounds, 1)
    if metric not in ("accuracy", "log_loss"):
        raise EnsembleError(f"the 'metric' parameter must be one of {{'accuracy', 'log_loss'}}; got {metric!r}")
    p = _floats("probs", probs, 3, probs=True)
    labels = _labels(y, p.shape, "probs")
    rows = np.arange(labels.size)
    total = np.zeros(p.shape[1:])
    counts = np.zeros(p.shape[0], dtype=np.int64)
    picks: list[int] = []
    for k in range(1, rounds + 1):
        cand = (total[None] + p) / k  # running mean if member m were added now
        ll = -np.log(np.clip(cand[:, rows, labels], _EPS, None)).mean(axis=1)
        ok = np.ones(p.shape[0], dtype=bool)
        if metric == "accuracy":
            hits = (cand.argmax(axis=2) == labels).sum(axis=1)  # integer counts: exact ties
            ok = hits == hits.max()
        best = ll[ok].min()
        ok &= ll <= best + _TIE_TOL * max(1.0, abs(best))
        m = int(np.flatnonzero(ok)[0])
        total += p[m]
        counts[m] += 1
        picks.append(m)
    return counts / rounds, picks


def coverage_curve(values, correct, points: int | Sequence[float] | None = None, *, min_answered: int = 1,
                   also: Sequence[float] = ()) -> list[dict]:
    """Accuracy on the rows answered when abstaining below each threshold.

    A row is answered when ``value >= threshold``. Thresholds: the distinct values if at most
    ``points`` (default 20), else ``points`` quantiles (at real values); or exactly ``points`` if
    it is a sequence; plus the thresholds in `also` (a chosen one, to be found in the curve).
    ``min(values)`` (answer everything) is always in. Thresholds answering fewer than
    `min_answered` rows are left out (but those of `also`): an accuracy on a handful of rows is
    noise, and the quantiles then stop where that many rows are still answered. Rows come by
    coverage descending, then threshold; accuracy is None at coverage 0. Empty input gives ``[]``.

    Example:
        >>> coverage_curve([0.9, 0.6, 0.8, 0.6], [True, False, True, True])  # doctest: +NORMALIZE_WHITESPACE
        [{'threshold': 0.6, 'coverage': 1.0, 'accuracy': 0.75},
         {'threshold': 0.8, 'coverage': 0.5, 'accuracy': 1.0},
         {'threshold': 0.9, 'coverage': 0.25, 'accuracy': 1.0}]
        >>> [r["threshold"] for r in coverage_curve([0.9, 0.6, 0.8, 0.6], [True] * 4, min_answered=2)]
        [0.6, 0.8]
    """
    v = np.asarray(values, dtype=np.float64)
    ok = np.asarray(correct)
    if v.ndim != 1 or ok.shape != v.shape:
        raise EnsembleError(f"'values' has shape {v.shape} and 'correct' has shape {ok.shape}; "
                            "expected two (rows,) arrays of the same length")
    if v.size == 0:
        return []
    v = _floats("values", v, 1)
    if ok.dtype != bool:
        raise EnsembleError(f"'correct' must be a bool array; got dtype {ok.dtype}")
    least = _int_param("min_answered", min_answered, 1)
    if points is None or isinstance(points, (int, np.integer)):
        n = 20 if points is None else _int_param("points", points, 1)
        thresholds = np.unique(v)
        if thresholds.size > n:
            top = max(0.0, 1.0 - least / v.size) if least > 1 else 1.0
            thresholds = np.unique(np.quantile(v, np.linspace(0.0, top, n), method="lower"))
    else:
        thresholds = np.unique(np.append(_floats("points", points, 1), v.min()))
    kept = {float(t) for t in also} if len(also) else set()
    thresholds = np.unique(np.append(thresholds, sorted(kept))) if kept else thresholds
    rows = []
    for t in thresholds:
        answered = v >= t
        if least > 1 and answered.sum() < least and t != v.min() and float(t) not in kept:
            continue
        rows.append({"threshold": float(t), "coverage": float(answered.mean()),
                     "accuracy": float(ok[answered].mean()) if answered.any() else None})
    return sorted(rows, key=lambda r: (-r["coverage"], r["threshold"]))


def abstain_mask(values, threshold: float) -> np.ndarray:
    """True where the model should abstain, i.e. ``value < threshold``.

    Example:
        >>> abstain_mask([0.9, 0.5, 0.7], 0.7)
        array([False,  True, False])
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) \
            or not np.isfinite(threshold):
        raise EnsembleError(f"the 'threshold' parameter must be a finite number; got {threshold!r}")
    return np.asarray(values, dtype=np.float64) < float(threshold)


def abstain_threshold(values, correct, *, coverage: float | None = None, accuracy: float | None = None) -> dict:
    """Choose the abstention threshold on validation rows, for a target coverage or accuracy.

    Rows are answered when ``value >= threshold`` (as in `abstain_mask`). Give exactly one target:

    * ``coverage``: the highest threshold that still answers at least this share of the rows;
    * ``accuracy``: the lowest threshold (so the most rows answered) at which the answered rows
      are at least this accurate; an error if no threshold gets there.

    Returns the threshold and what it gives on these rows: ``{"threshold", "coverage", "accuracy"}``.

    Example:
        >>> abstain_threshold([0.9, 0.6, 0.8, 0.7], [True, False, True, False], coverage=0.5)
        {'threshold': 0.8, 'coverage': 0.5, 'accuracy': 1.0}
        >>> abstain_threshold([0.9, 0.6, 0.8, 0.7], [True, False, True, False], accuracy=0.6)
        {'threshold': 0.7, 'coverage': 0.75, 'accuracy': 0.6666666666666666}
    """
    if (coverage is None) == (accuracy is None):
        raise EnsembleError("abstain_threshold: give exactly one of 'coverage' and 'accuracy'")
    name, target = ("coverage", coverage) if coverage is not None else ("accuracy", accuracy)
    if isinstance(target, bool) or not isinstance(target, (int, float, np.number)) or not 0 < target <= 1:
        raise EnsembleError(f"the '{name}' parameter must be a number in (0, 1]; got {target!r}")
    v = _floats("values", values, 1)
    ok = np.asarray(correct)
    if ok.shape != v.shape or ok.dtype != bool:
        raise EnsembleError(f"'correct' must be a bool array of shape {v.shape}; got {ok.dtype} {ok.shape}")
    order = np.argsort(-v, kind="stable")
    ranked, hits = v[order], np.cumsum(ok[order])
    # Cut only between distinct values: rows tied with the threshold are answered together.
    last = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))  # index of each value's last row
    answered = last + 1
    if coverage is not None:
        # float slack: a coverage of 0.9 over 10 rows must accept 9 answered rows
        k = last[np.searchsorted(answered, np.ceil(coverage * v.size - 1e-9))]
    else:
        reach = np.flatnonzero(hits[last] / answered >= accuracy - 1e-12)
        if reach.size == 0:
            best = int(np.argmax(hits[last] / answered))
            raise EnsembleError(
                f"abstain_accuracy: no threshold reaches accuracy {accuracy} on the {v.size} validation rows "
                f"(the best is {hits[last][best] / answered[best]:.4f}, answering {answered[best]} rows); "
                "lower it, or set abstain_coverage instead")
        k = last[reach[-1]]
    return {"threshold": float(ranked[k]), "coverage": float((k + 1) / v.size), "accuracy": float(hits[k] / (k + 1))}
