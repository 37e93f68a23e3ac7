"""Stacking: a cross-fitted logistic regression on the members' log-probabilities.

Fitted on the validation split (`Ensemble.fit_vote` with ``method = "stacking"``); predicts in
NumPy and round-trips through plain JSON (`Stacker.to_dict` / `from_dict`), never pickle, so a
saved ensemble cannot run code when loaded.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold

from .combine import _EPS, _floats, _int_param, _labels, _softmax_last
from .errors import EnsembleError

__all__ = ["C_GRID", "Stacker", "stacker_features"]

# Inverse L2 strengths the out-of-fold log-loss chooses from. Not below 0.1: on SST-5 (7 members, 800
# validation rows) the log-loss preferred 0.01 by 0.0035 nats, which cost 2.1 points of dev accuracy.
C_GRID = (0.1, 1.0, 10.0)

_STACKER_FORMAT = "ensemble.stacker"
_STACKER_KEYS = ("format", "version", "n_members", "n_classes", "folds", "classes", "coef", "intercept")


def stacker_features(p: np.ndarray) -> np.ndarray:
    # Row i -> [log p[0, i, :], log p[1, i, :], ...]; logs make the model a weighted
    # geometric pool, and let it learn e.g. that member 2's class 0 means class 1.
    return np.log(np.clip(p, _EPS, None)).transpose(1, 0, 2).reshape(p.shape[1], -1)


def _fit_lr(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    classes = np.unique(y)
    if classes.size == 1:  # nothing to learn; a single softmax row gives probability 1
        return classes, np.zeros((1, x.shape[1])), np.zeros(1)
    # Standardized features: log-probabilities span 0 to -27, which took lbfgs 5-8x the iterations
    # (54 s of a 74 s vote at 8 members x 20 classes), and one C then means the same for every
    # feature. The coefficients are folded back to act on the raw features.
    mean, scale = x.mean(axis=0), x.std(axis=0)
    # A constant feature (a member that always gives a class the same probability, or one clipped at
    # 1e-12 on every row) keeps a rounding-error spread (std ~1e-15): divided by it, its coefficient
    # would come back ~1e12. Such a feature is zeroed: it carries nothing, and gets coefficient 0.
    constant = scale <= 1e-9 * np.maximum(1.0, np.abs(mean))
    scale[constant] = 1.0
    z = (x - mean) / scale
    z[:, constant] = 0.0
    model = LogisticRegression(C=c, max_iter=2000).fit(z, y)
    coef = model.coef_ / scale
    coef[:, constant] = 0.0
    intercept = model.intercept_ - coef @ mean
    if classes.size == 2:  # sklearn's binary (1, F) form: sigmoid(z) == softmax([0, z])[1]
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, intercept[0]])
    return model.classes_.astype(np.int64), coef.astype(np.float64), intercept.astype(np.float64)


def _apply(x: np.ndarray, classes: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
           n_classes: int) -> np.ndarray:
    out = np.zeros((x.shape[0], n_classes))
    out[:, classes] = _softmax_last(x @ coef.T + intercept)  # unseen classes keep exactly 0
    return out


class Stacker:
    """Multinomial logistic regression on the members' log-probabilities, cross-fitted.

    Features per row: ``log(max(p, 1e-12))`` of every member, member-major (M * C values),
    standardized for the fit (the saved coefficients act on the raw features).
    `fit` leaves out-of-fold probabilities in ``oof_probs_`` for honest validation metrics.
    Classes absent from ``y`` get probability exactly 0. Prediction is NumPy only, so
    `to_dict` / `from_dict` (plain lists and numbers, never pickle) reproduce it exactly.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> probs = rng.dirichlet([1.0, 1.0, 1.0], size=(2, 30))
        >>> y = probs[0].argmax(axis=1)
        >>> s = Stacker().fit(probs, y, folds=3)
        >>> s.oof_probs_.shape, bool(np.allclose(s.oof_probs_.sum(axis=1), 1))
        ((30, 3), True)
        >>> bool((Stacker.from_dict(s.to_dict()).predict_proba(probs) == s.predict_proba(probs)).all())
        True
    """

    def __init__(self) -> None:
        self.n_members_: int | None = None
        self.n_classes_: int | None = None
        self.folds_: int | None = None
        self.classes_: np.ndarray | None = None  # (K,) classes seen in fit; rows of coef_
        self.coef_: np.ndarray | None = None  # (K, M * C)
        self.intercept_: np.ndarray | None = None  # (K,)
        self.oof_probs_: np.ndarray | None = None  # (N, C), from fit only
        self.C_: float | None = None  # the L2 strength used, from fit only

    def fit(self, probs, y, folds: int = 5, seed: int = 0, C: float | None = None) -> Stacker:
        """Cross-fit on ``(probs, y)`` (fills ``oof_probs_``), then fit on all rows; returns self.

        Folds are stratified, shuffled with ``seed``. ``folds`` drops to the rarest class's row
        count (not below 2) so every training fold sees every class; a 1-row class then misses
        from one fold's model, which gives it 0 there. ``C``: sklearn's inverse L2 strength on the
        standardized features; None chooses it from `C_GRID` by the out-of-fold log-loss (many
        members and classes against few rows need a stronger penalty, or the stacker is
        overconfident), kept in ``C_``.

        Example:
            >>> Stacker().fit(np.full((1, 4, 2), 0.5), np.array([0, 1, 0, 1]), folds=2).oof_probs_.shape
            (4, 2)
        """
        folds = _int_param("folds", folds, 2)
        seed = _int_param("seed", seed, 0)
        if C is not None and (isinstance(C, bool) or not isinstance(C, (int, float)) or not 0 < C < np.inf):
            raise EnsembleError(f"the 'C' parameter must be a float > 0 or None; got {C!r}")
        p = _floats("probs", probs, 3, probs=True)
        labels = _labels(y, p.shape, "probs")
        if labels.size < 2:
            raise EnsembleError("Stacker.fit needs at least 2 labelled rows; got 1")
        x, n_classes = stacker_features(p), p.shape[2]
        counts = np.unique(labels, return_counts=True)[1]
        k = int(max(2, min(folds, counts.min())))
        # Stratifying needs some class with >= 2 rows; otherwise plain shuffled K-fold.
        splitter = (StratifiedKFold if counts.max() >= 2 else KFold)(k, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # a 1-row class is expected here, handled above
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            splits = list(splitter.split(x, labels))
        best = None
        for c in C_GRID if C is None else (float(C),):
            oof = np.zeros((labels.size, n_classes))
            for train, test in splits:
                oof[test] = _apply(x[test], *_fit_lr(x[train], labels[train], c), n_classes)
            loss = -np.log(np.clip(oof[np.arange(labels.size), labels], _EPS, None)).mean()
            if best is None or loss < best[0] - 1e-12:  # ties: the stronger penalty, listed first
                best = (loss, c, oof)
        _, self.C_, oof = best
        self.classes_, self.coef_, self.intercept_ = _fit_lr(x, labels, self.C_)
        self.n_members_, self.n_classes_, self.folds_, self.oof_probs_ = p.shape[0], n_classes, k, oof
        return self

    def predict_proba(self, probs) -> np.ndarray:
        """(rows, classes) stacked probabilities for member probabilities (M, rows, C).

        Example:
            >>> s = Stacker().fit(np.full((1, 4, 2), 0.5), np.array([0, 1, 0, 1]), folds=2)
            >>> s.predict_proba(np.full((1, 1, 2), 0.5)).round(6)
            array([[0.5, 0.5]])
        """
        if self.coef_ is None:
            raise EnsembleError("the Stacker is not fitted; call fit() or from_dict() first")
        p = _floats("probs", probs, 3, probs=True)
        if (p.shape[0], p.shape[2]) != (self.n_members_, self.n_classes_):
            raise EnsembleError(f"'probs' has shape {p.shape} but the stacker was fitted on shape "
                                f"({self.n_members_}, rows, {self.n_classes_})")
        return _apply(stacker_features(p), self.classes_, self.coef_, self.intercept_, self.n_classes_)

    def to_dict(self) -> dict:
        """The fitted model as JSON-able plain data (``oof_probs_`` is not included).

        Example:
            >>> Stacker().fit(np.full((1, 3, 2), 0.5), np.array([0, 0, 0])).to_dict()["classes"]
            [0]
        """
        if self.coef_ is None:
            raise EnsembleError("the Stacker is not fitted; call fit() or from_dict() first")
        return {"format": _STACKER_FORMAT, "version": 1, "n_members": self.n_members_,
                "n_classes": self.n_classes_, "folds": self.folds_, "classes": self.classes_.tolist(),
                "coef": self.coef_.tolist(), "intercept": self.intercept_.tolist()}

    @classmethod
    def from_dict(cls, d) -> Stacker:
        """Rebuild a Stacker from `to_dict` output; malformed input raises `EnsembleError`.

        Example:
            >>> Stacker.from_dict([])
            Traceback (most recent call last):
            ...
            ensemble.errors.EnsembleError: stacker dict: expected a dict; got list
        """
        def check(ok: bool, why: str) -> None:
            if not ok:
                raise EnsembleError(f"stacker dict: {why}")

        check(isinstance(d, dict), f"expected a dict; got {type(d).__name__}")
        missing = sorted(set(_STACKER_KEYS) - d.keys())
        check(not missing, f"missing key(s) {missing}")
        check(d["format"] == _STACKER_FORMAT and d["version"] == 1,
              f"expected format {_STACKER_FORMAT!r} version 1; got {d['format']!r} version {d['version']!r}")
        for key, low in (("n_members", 1), ("n_classes", 1), ("folds", 2)):
            check(type(d[key]) is int and d[key] >= low, f"'{key}' must be an int >= {low}; got {d[key]!r}")
        out, classes = cls(), d["classes"]
        check(isinstance(classes, list) and all(type(c) is int for c in classes) and classes == sorted(set(classes))
              and len(classes) > 0 and classes[0] >= 0 and classes[-1] < d["n_classes"],
              f"'classes' must be a non-empty increasing list of ints in [0, {d['n_classes']}); got {classes!r}")
        out.n_members_, out.n_classes_, out.folds_ = d["n_members"], d["n_classes"], d["folds"]
        out.classes_ = np.array(classes, dtype=np.int64)
        for key, shape in (("coef", (len(classes), d["n_members"] * d["n_classes"])), ("intercept", (len(classes),))):
            arr = np.asarray(d[key], dtype=object) if isinstance(d[key], list) else np.empty(0, object)
            # type() rather than isinstance(): bools and numeric strings are not numbers here
            check(arr.shape == shape and all(type(v) in (int, float) for v in arr.flat),
                  f"'{key}' must be a list of numbers of shape {shape}; got shape {arr.shape}")
            setattr(out, key + "_", arr.astype(np.float64))
            check(bool(np.all(np.isfinite(getattr(out, key + "_")))), f"'{key}' contains NaN or infinite values")
        return out
