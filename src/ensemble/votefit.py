"""Fitting the vote on validation logits: temperatures, weights, Caruana selection, the stacker
and the abstention threshold (`Ensemble.fit_vote`, which `ensemble fit` and `ensemble vote` call).

Only the validation split is read, so a report on another split stays honest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import combine
from .errors import EnsembleError
from .recipe import LEARNED_METHODS, VoteConfig, check_vote
from .stacking import Stacker, stacker_features

if TYPE_CHECKING:  # pragma: no cover
    from .ensemble import Ensemble


VOTE_STATE = ("method", "weights", "weights_learned", "temperatures", "ensemble_temperature", "stacker", "abstain_below",
              "abstain_on")


def fit_vote(ens: Ensemble, logits: np.ndarray, y: np.ndarray, vote: VoteConfig) -> dict:
    """`Ensemble.fit_vote`'s work: set `ens`'s vote from `logits` (members, rows, classes) and
    label indices `y`; return what was fitted, for the report. A call that raises leaves `ens`
    voting as before.

    Example:
        >>> info = fit_vote(ens, valid_logits, y_valid, VoteConfig("selection"))  # doctest: +SKIP
        >>> sorted(info)[:3]  # doctest: +SKIP
        ['calibrated', 'fitted_on', 'method']
    """
    vote = check_vote(vote, list(ens.members), "fit_vote")
    before = {key: getattr(ens, key) for key in VOTE_STATE}
    try:
        return _fit(ens, logits, y, vote)
    except BaseException as exc:
        for key, value in before.items():
            setattr(ens, key, value)
        if isinstance(exc, EnsembleError) and str(exc).startswith("'y'"):  # from combine's helpers: say whose
            raise EnsembleError(f"fit_vote: {exc}") from None
        raise


def _fit(ens: Ensemble, logits, y, vote: VoteConfig) -> dict:
    names = list(ens.members)
    # the constructor's checks of method, weights and abstention, before anything changes: a bad
    # VoteConfig must not leave this ensemble voting in a way that its saved manifest cannot load
    type(ens)(list(ens.members.values()), vote.method, dict(vote.weights or {}), abstain_below=vote.abstain_below,
              abstain_on=vote.abstain_on)
    y = np.asarray(y)
    logits = ens._checked_logits(logits, "fit_vote")
    if hasattr(logits, "detach"):  # a torch tensor, of any float dtype (bf16 included)
        logits = logits.detach().float().cpu().numpy()
    logits = np.asarray(logits)
    if y.ndim != 1 or len(y) != logits.shape[1]:
        raise EnsembleError(f"fit_vote: 'y' holds {y.size} labels for {logits.shape[1]} rows of logits; give one "
                            "label index per row")
    if logits.size and np.isfinite(logits).all() and logits.min() >= 0 and logits.max() <= 1 and np.allclose(
            logits.sum(axis=2, dtype=np.float64), 1.0, atol=1e-3):
        raise EnsembleError("fit_vote: these logits are probabilities (every row sums to 1); temperatures and "
                            "thresholds fitted on them would be wrong: pass logits (np.log(probabilities) will do)")
    ens.method, ens.abstain_below, ens.abstain_on = vote.method, vote.abstain_below, vote.abstain_on
    ens.weights = {n: float(vote.weights.get(n, 1.0)) for n in names}  # the config says it all
    temps = combine.fit_temperatures(logits, y) if vote.calibrate else np.ones(len(names))
    ens.temperatures = dict(zip(names, map(float, temps), strict=True))
    probs = combine.softmax(logits, temps)
    info: dict = {"method": vote.method, "fitted_on": "valid", "valid_rows": len(y),
                  "calibrated": bool(vote.calibrate), "temperatures": dict(ens.temperatures)}
    missing = [label for k, label in enumerate(ens.labels) if not (y == k).any()]
    if missing:  # nothing there to fit them on: a stacker never predicts them, weights ignore them
        info["labels_not_in_valid"] = missing
    if vote.method == "weighted":
        ens.weights = dict(zip(names, map(float, combine.fit_weights(probs, y)), strict=True))
    elif vote.method == "selection":
        weights, picks = combine.caruana_selection(probs, y, rounds=vote.selection_rounds)
        ens.weights = dict(zip(names, map(float, weights), strict=True))
        info["picks"] = {n: int(picks.count(k)) for k, n in enumerate(names)}
    elif vote.method == "stacking":
        ens.stacker = Stacker().fit(probs, y, folds=vote.stacking_folds)
        oof = ens.stacker.oof_probs_
        info["valid"] = {"accuracy": float((oof.argmax(1) == y).mean()), "nll": combine.nll(oof, y)}
        info["valid_scored"] = "out-of-fold (cross-fitted)"
        info["stacker_c"] = ens.stacker.C_  # chosen by the out-of-fold log-loss
        # how much the stacker uses each member: its share of the coefficients' norm, on the standardized
        # features the stacker was fitted on (a member's log-probabilities may spread wider than another's)
        size = len(ens.labels)
        coef = ens.stacker.coef_ * stacker_features(probs).std(axis=0)
        norms = [float(np.linalg.norm(coef[:, k * size:(k + 1) * size])) for k in range(len(names))]
        info["reliance"] = {n: (v / sum(norms) if sum(norms) else 0.0) for n, v in zip(names, norms, strict=True)}
    ens.weights_learned = True  # fitted above (or fixed by the config): the vote below may use them
    ens.ensemble_temperature = 1.0
    if vote.method != "stacking":
        ens.stacker = None
        voted = ens.vote_logits(logits, member_details=False)
        scores = voted.scores
        if vote.calibrate and vote.method != "hard":  # hard-vote shares are not probabilities
            log_scores = np.log(np.clip(scores, 1e-12, None))[None].astype(np.float64)
            ens.ensemble_temperature = float(combine.fit_temperatures(log_scores, y)[0])
            scores = combine.soften(scores, ens.ensemble_temperature)
            info["ensemble_temperature"] = ens.ensemble_temperature
        # the labels as predicted (a hard vote breaks ties between shares by mean probability)
        info["valid"] = {"accuracy": float((voted.labels == y).mean())}
        if vote.method != "hard":  # vote shares have no log-loss worth reading
            info["valid"]["nll"] = combine.nll(scores, y)
        info["valid_scored"] = ("in-sample: fitted on these rows" if vote.method in LEARNED_METHODS
                                else "in-sample: temperatures fitted on these rows" if vote.calibrate
                                else "nothing fitted")
    if vote.method != "stacking":
        info["weights"] = dict(ens.weights)
    if vote.abstain_target is not None:
        info["abstention"] = _fit_abstention(ens, logits, y, vote)
    return info


def _fit_abstention(ens: Ensemble, logits: np.ndarray, y: np.ndarray, vote: VoteConfig) -> dict:
    """Set ``abstain_below`` from the validation rows for the recipe's coverage or accuracy target.

    The confidence is the saved vote's own on these rows (in-sample, for the stacker too): a
    threshold chosen on the stacker's out-of-fold confidence answered another share of the rows
    once the stacker refitted on all of them (54.7% of the validation rows for a 70% target).
    """
    target, value = vote.abstain_target
    scored = ens.vote_logits(logits, member_details=False)
    values, correct = scored.confidence, scored.labels == y
    if vote.abstain_on == "agreement":
        values = scored.agreement
    chosen = combine.abstain_threshold(values, correct, **{target: value})
    ens.abstain_below = chosen["threshold"]
    fitted = vote.method in LEARNED_METHODS or vote.calibrate  # what was fitted on these same rows
    return {"target": target, "value": float(value), "on": vote.abstain_on, "threshold": chosen["threshold"],
            "valid_coverage": chosen["coverage"], "valid_accuracy": chosen["accuracy"],
            **({"scored": "in-sample: the vote was fitted on these rows"} if fitted else {})}


def missing_labels_warning(info: dict | None, where: str) -> str | None:
    """The warning for labels the validation rows lack (`fit_vote` lists them), or None.

    Example:
        >>> missing_labels_warning({"method": "stacking", "labels_not_in_valid": ["neg"]}, "--valid")
        "warning: --valid has no row labelled 'neg': the vote was fitted without that class (a stacker never predicts it)"
        >>> many = missing_labels_warning({"method": "soft", "labels_not_in_valid": [f"c{k}" for k in range(12)]}, "x")
        >>> many[many.index("'c8'"):]
        "'c8', 'c9' and 2 more: the vote was fitted without those classes"
    """
    missing = (info or {}).get("labels_not_in_valid")
    if not missing:
        return None
    listed = ", ".join(repr(m) for m in missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    never = " (a stacker never predicts it)" if info.get("method") == "stacking" else ""
    return (f"warning: {where} has no row labelled {listed}: the vote was fitted without "
            f"{'that class' if len(missing) == 1 else 'those classes'}{never}")


def vote_warnings(info: dict | None, where: str, accuracy_setting: str) -> list[str]:
    """What to say about a fitted vote: labels the validation rows lack (`where` names them), and
    an accuracy target met on a handful of rows (`accuracy_setting` names the key or flag)."""
    warnings = (missing_labels_warning(info, where), thin_abstention_warning(info, accuracy_setting))
    return [w for w in warnings if w is not None]


MIN_ANSWERED = 30  # validation rows an accuracy target must answer for its accuracy to mean something


def thin_abstention_warning(info: dict | None, setting: str) -> str | None:
    """The warning for an accuracy target reached by answering almost no validation row (a
    threshold above all but a few confidences: unseen rows are then nearly all abstained), or None.
    `setting` names the recipe key or flag that set the target.

    Example:
        >>> thin_abstention_warning({"valid_rows": 300, "abstention": {"target": "accuracy", "value": 0.99,
        ...                          "valid_coverage": 1 / 300}}, "--abstain-accuracy")
        'warning: --abstain-accuracy 0.99 is reached by answering 1 of the 300 validation rows: an accuracy measured on so few rows is noise, and nearly every unseen row will be abstained; lower it, or choose by --abstain-coverage'
    """
    chosen = (info or {}).get("abstention")
    if not chosen or chosen.get("target") != "accuracy" or not info.get("valid_rows"):
        return None
    rows = int(info["valid_rows"])
    answered = round(chosen["valid_coverage"] * rows)
    if answered >= MIN_ANSWERED or chosen["valid_coverage"] >= 0.5:  # 19 of 20 rows is not "nearly none"
        return None
    other = setting.replace("accuracy", "coverage")
    return (f"warning: {setting} {chosen['value']:g} is reached by answering {answered} of the {rows} validation rows: "
            "an accuracy measured on so few rows is noise, and nearly every unseen row will be abstained; lower it, "
            f"or choose by {other}")
