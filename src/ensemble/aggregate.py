"""Voting math: turn the members' logits into one ensemble decision per row.

Everything here is the reference semantics for voting; any faster path (a fused GPU kernel)
must reproduce `aggregate` exactly, tie-breaks included. Weighted sums over members run in
member order (0, 1, 2, ...) with elementwise float32 ops for soft scores and float64 for vote
shares, so classes with identical inputs get bit-identical scores and tie exactly.

Tie-breaking, in one place:

* A member's own prediction is the argmax of its logits; equal logits -> the lowest class index.
* Soft voting: the label is the argmax of the weighted mean probability; exact ties -> the
  lowest class index.
* Hard voting: the label is the class with the largest share of member weight. Classes whose
  shares are equal (within ``_SHARE_TOL``, which only absorbs float rounding of sums such as
  0.2 + 0.3 vs 0.5) are tied, and the tie goes to the one with the higher weighted mean
  probability (the soft score); if that is exactly equal too, to the lowest class index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from .errors import EnsembleError, one_of
from .settings import MIN_TEMPERATURE

__all__ = ["METHODS", "Vote", "aggregate"]

METHODS = ("hard", "soft")

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence]

# Elements of one (members, rows, classes) float32 intermediate per chunk: 64 MiB, i.e. about
# 1M rows for 4 members x 4 classes. Sizing chunks by elements rather than rows keeps memory
# bounded however many members or classes there are. Tests shrink it to force many chunks.
_CHUNK_ELEMENTS = 1 << 24
# Chunks of the fused CPU kernel when it reads the caller's float32 array in place (no copy, no
# intermediate): a chunk then only bounds how long one parallel call runs (~0.1 s at 1 GiB), so
# Ctrl-C is still answered. Each call is one parallel launch whose threads finish unevenly: 16x
# fewer of them gave 7-15% more rows/s on 4-16 members x 5-20 classes (AVX-512 EPYC, 2 cores).
_WHOLE_CHUNK_ELEMENTS = 1 << 28

# Weight shares are sums of normalised weights (each share in [0, 1]); float64 rounding of such
# sums is ~1e-16, so anything closer than this is a tie the user meant, not a real difference.
_SHARE_TOL = 1e-9


@dataclass(frozen=True, eq=False)  # arrays have no one truth value: compare fields with np.array_equal
class Vote:
    """The ensemble decision and the per-member facts the report is built from.

    Attributes:
        labels: (rows,) int64, the ensemble's class index per row.
        scores: (rows, classes) float32. Soft: weighted mean of member probabilities. Hard: share
            of member weight voting for each class. Rows sum to 1 either way.
        confidence: (rows,) float32, ``scores[row, labels[row]]``.
        agreement: (rows,) float32, share of member weight whose own prediction equals the
            ensemble label.
        member_labels: (members, rows) int64, each member's argmax (None with
            ``member_details=False``).
        member_confidence: (members, rows) float32, each member's probability of its own argmax
            after its temperature (None with ``member_details=False``).
        equal_counts: (members, members) int64, rows on which members i and j predict the same
            class (the diagonal is the row count).
    """

    labels: np.ndarray
    scores: np.ndarray
    confidence: np.ndarray
    agreement: np.ndarray
    member_labels: np.ndarray | None
    member_confidence: np.ndarray | None
    equal_counts: np.ndarray

    def __repr__(self) -> str:
        """A summary (a notebook would otherwise print every array).

        Example:
            >>> aggregate(np.array([[[2.0, 0.0]], [[0.0, 1.0]]]), "soft")
            Vote(rows=1, classes=2, members=2, labels=[0], mean confidence 0.5749, mean agreement 0.5000)
        """
        rows, classes = self.scores.shape
        shown = self.labels[:8].tolist()
        more = ", ..." if rows > 8 else ""
        mean = (lambda a: float(a.mean()) if rows else float("nan"))  # noqa: E731
        return (f"Vote(rows={rows}, classes={classes}, members={len(self.equal_counts)}, labels={str(shown)[:-1]}{more}], "
                f"mean confidence {mean(self.confidence):.4f}, mean agreement {mean(self.agreement):.4f})")


def aggregate(
    logits: ArrayLike,
    method: str = "soft",
    weights: ArrayLike | None = None,
    temperatures: ArrayLike | None = None,
    inputs: str = "logits",
    member_details: bool = True,
) -> Vote:
    """Vote the members' logits into one label per row.

    Member probabilities are ``softmax(logits[m] / temperatures[m])``; weights are normalised to
    sum to 1. With ``method="soft"`` the label is the argmax of the weighted mean probability
    (exact ties -> lowest class index). With ``method="hard"`` each member votes its argmax
    (ties inside a member -> lowest class index) and the label is the class with the largest
    share of member weight; ties between classes go to the higher soft score (the weighted mean
    probability), and if that is also equal, to the lowest class index. Scores are float32 and
    compared as computed: classes that tie in exact arithmetic may differ by a rounding step
    (two members' softmaxes add their terms in different orders), and then the higher wins.

    Computation is float32 in row chunks, so memory stays bounded and the input is never copied
    whole. On CPU one fused numba pass does each chunk (`ensemble.kernels_cpu`); on CUDA one
    fused Triton kernel (`ensemble.kernels`); elsewhere, or without those packages, the torch
    reference below (vote shares in float64; the fused kernels use float32 shares with a 1e-6
    tie tolerance). Results are numpy arrays.

    Args:
        logits: (members, rows, classes) tensor or array; float32, bfloat16, float16 or float64.
        method: ``"soft"`` or ``"hard"``.
        weights: one non-negative weight per member, not all zero; None means all equal.
        temperatures: one finite temperature >= 1e-6 per member; None means all 1.
        inputs: ``"logits"`` (the default) or ``"probs"`` when `logits` already holds member
            probabilities (e.g. scikit-learn ``predict_proba`` outputs stacked); they are then
            averaged as they are, or sharpened as ``p ** (1 / T)`` renormalised when
            temperatures are given. The first 1,024 rows of each member are checked to be
            probabilities (no value below 0, rows summing to 1 within 1e-2).
        member_details: keep every member's label and confidence (members x rows arrays, the
            largest outputs). Agreement and the equal-prediction counts are computed either way;
            prediction that needs only the ensemble's answer passes False.

    Returns:
        A `Vote`.

    Raises:
        EnsembleError: for an unknown method, logits that are not 3-D, non-numeric or
            non-finite, or invalid weights or temperatures.

    Example:
        >>> import numpy as np
        >>> logits = np.array([[[2.0, 0.0]], [[0.0, 1.0]], [[0.0, 1.0]]])  # 3 members, 1 row
        >>> aggregate(logits, "hard").labels.tolist(), aggregate(logits, "soft").labels.tolist()
        ([1], [1])
        >>> aggregate(logits, "hard", weights=[2, 1, 0]).labels.tolist()
        [0]
    """
    if method not in METHODS:
        raise EnsembleError(f"the 'method' parameter must be one of {one_of(sorted(METHODS))}; got {method!r}")
    if inputs not in ("logits", "probs"):
        raise EnsembleError(f"the 'inputs' parameter must be one of {one_of(('logits', 'probs'))}; got {inputs!r}")
    if not isinstance(member_details, (bool, np.bool_)):
        raise EnsembleError(f"the 'member_details' parameter must be True or False; got {member_details!r}")
    source = _as_source(logits)
    members, rows, classes = (int(n) for n in source.shape)
    weight = _member_vector(weights, "weights", members, default=1.0)
    if not np.isfinite(weight).all():
        raise EnsembleError(f"the 'weights' parameter must be finite; got {weight.tolist()}")
    if (weight < 0).any():
        raise EnsembleError(f"the 'weights' parameter must be non-negative; got {weight.tolist()}")
    if not (weight > 0).any():
        raise EnsembleError(f"the 'weights' parameter must not be all zero; got {weight.tolist()}")
    temperature = _member_vector(temperatures, "temperatures", members, default=1.0)
    if not (np.isfinite(temperature) & (temperature > 0)).all():
        raise EnsembleError(
            f"the 'temperatures' parameter must be positive and finite; got {temperature.tolist()}"
        )
    if (temperature < MIN_TEMPERATURE).any():  # logits / T would overflow float32: NaN votes
        raise EnsembleError(f"the 'temperatures' parameter must be >= {MIN_TEMPERATURE:g} (smaller ones overflow "
                            f"float32 and vote like an argmax: use method 'hard'); got {temperature.tolist()}")

    weight = weight / weight.max()  # first: weights that are each finite may overflow in their sum
    weight = weight / weight.sum()
    if inputs == "probs":
        _check_probs(source)
    device = torch.device("cpu")
    if isinstance(source, torch.Tensor) and source.device.type != "mps":  # MPS has no float64
        device = source.device
    weight64 = torch.tensor(weight, dtype=torch.float64, device=device)
    temperature32 = torch.tensor(temperature, dtype=torch.float32, device=device)

    # Preallocated so that the chunks are written in place, never concatenated.
    labels = np.empty(rows, dtype=np.int64)
    scores = np.empty((rows, classes), dtype=np.float32)
    confidence = np.empty(rows, dtype=np.float32)
    agreement = np.empty(rows, dtype=np.float32)
    # Without member details the fused CPU kernel writes them into a small scratch it reuses.
    member_labels = np.empty((members, rows), dtype=np.int64) if member_details else None
    member_confidence = np.empty((members, rows), dtype=np.float32) if member_details else None
    equal_counts = torch.zeros((members, members), dtype=torch.int64, device=device)

    probs_in = inputs == "probs"
    if probs_in and not np.all(temperature == 1.0):
        probs_in = False  # p ** (1/T) renormalised is softmax(log(p) / T): vote the log-probabilities
        source = _log_probs(source)
    fused = _fused_backend(device, members, classes)
    # float32 C-contiguous input goes to the numba kernel whole, with a row range per chunk:
    # contiguous memory, no copy (other dtypes and layouts are converted chunk by chunk)
    whole = _contiguous_float32(source) if fused == "numba" else None
    step = max(1, (_CHUNK_ELEMENTS if whole is None else _WHOLE_CHUNK_ELEMENTS) // (members * classes))
    with torch.no_grad():
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            if fused == "numba":
                from . import kernels_cpu

                chunk = _chunk_numpy(source, start, stop) if whole is None else whole[:, start:stop]
                views = {"labels": labels[start:stop], "scores": scores[start:stop], "confidence": confidence[start:stop],
                         "agreement": agreement[start:stop]}
                if member_details:  # whole, written from column `start` (a column slice is not contiguous)
                    views.update(member_labels=member_labels, member_confidence=member_confidence)
                part = kernels_cpu.fused_vote(chunk if whole is None else whole, method, weight,
                                              temperature, probs_in, out=views, member_details=member_details,
                                              start=0 if whole is None else start, stop=None if whole is None else stop,
                                              member_start=start)
                if part["bad_row"] >= 0:
                    _not_finite(source, chunk, part["bad_row"], start)
                equal_counts += torch.from_numpy(part["equal_counts"])
                continue  # written in place
            if fused == "triton" and not probs_in:
                from . import kernels

                # The kernel reads bf16 / fp16 as they are: half the bytes of an upcast copy.
                x = source[:, start:stop]
                if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
                    x = x.to(torch.float32)
                part = kernels.fused_vote(x, method, weight64.to(torch.float32), temperature32)
                if int(part["bad_row"]) >= 0:  # the kernel checks the logits as it reads them
                    _chunk(source, start, stop, device)  # raises, naming the member and row
            else:
                x = _chunk(source, start, stop, device)
                part = _vote_chunk(x, method, weight64, temperature32, probs_in)
            # straight into the result arrays (no intermediate host copy)
            outputs = {"labels": labels[start:stop], "scores": scores[start:stop],
                       "confidence": confidence[start:stop], "agreement": agreement[start:stop]}
            if member_details:
                outputs.update(member_labels=member_labels[:, start:stop],
                               member_confidence=member_confidence[:, start:stop])
            for key, view in outputs.items():
                torch.from_numpy(view).copy_(part[key])
            equal_counts += part["equal_counts"]
    return Vote(
        labels=labels,
        scores=scores,
        confidence=confidence,
        agreement=agreement,
        member_labels=member_labels,
        member_confidence=member_confidence,
        equal_counts=equal_counts.cpu().numpy(),
    )


def _vote_chunk(
    x: torch.Tensor, method: str, weight64: torch.Tensor, temperature32: torch.Tensor, probs_in: bool = False
) -> dict[str, torch.Tensor]:
    """The whole vote for one (members, rows, classes) float32 chunk of logits, or of
    probabilities with `probs_in` (averaged as they are, temperatures being all 1)."""
    members, rows, classes = x.shape
    # Probabilities are not sent through log and softmax: that round trip costs two
    # transcendental calls per element and their rounding (a few ulp, more with some libm paths).
    probs = x if probs_in else torch.softmax(x / temperature32[:, None, None], dim=-1)
    # Argmax of the logits themselves, not of the probabilities: softmax rounding could merge
    # two close logits into an equal probability and change which one wins.
    member_labels = x.argmax(dim=-1)  # torch returns the first maximum -> lowest class index
    member_confidence = probs.gather(-1, member_labels.unsqueeze(-1)).squeeze(-1)
    weight32 = weight64.to(torch.float32)
    # Summed member by member, in member order, with plain elementwise ops: every class's score
    # then goes through identical arithmetic, so identical inputs tie exactly. (A `.sum(dim=0)`
    # reduction may round SIMD lanes and the scalar tail differently, breaking such ties.)
    soft = weight32[0] * probs[0]
    for m in range(1, members):
        soft = soft + weight32[m] * probs[m]

    if method == "soft":
        scores = soft
        labels = soft.argmax(dim=-1)
        agreement64 = torch.zeros(rows, dtype=torch.float64, device=x.device)
        for m in range(members):  # member order, as for the hard tally below
            agreement64 = agreement64 + weight64[m] * (member_labels[m] == labels)
        agreement = agreement64.to(torch.float32)
    else:
        # float64 tally, one scatter per member: no (members, rows, classes) one-hot needed.
        shares = torch.zeros((rows, classes), dtype=torch.float64, device=x.device)
        for m in range(members):
            shares.scatter_add_(1, member_labels[m].unsqueeze(1), weight64[m].expand(rows, 1))
        tied = shares >= shares.amax(dim=-1, keepdim=True) - _SHARE_TOL
        # Soft scores are >= 0, so -1 excludes the untied classes; argmax's first-maximum rule
        # then gives the lowest index among classes equal in soft score too.
        labels = torch.where(tied, soft, torch.full_like(soft, -1.0)).argmax(dim=-1)
        scores = shares.to(torch.float32)
        agreement = scores.gather(1, labels.unsqueeze(1)).squeeze(1)

    confidence = scores.gather(1, labels.unsqueeze(1)).squeeze(1)
    equal_counts = (member_labels[:, None, :] == member_labels[None, :, :]).sum(dim=-1)
    return {
        "labels": labels,
        "scores": scores,
        "confidence": confidence,
        "agreement": agreement,
        "member_labels": member_labels,
        "member_confidence": member_confidence,
        "equal_counts": equal_counts,
    }


def _fused_backend(device: torch.device, members: int, classes: int) -> str:
    """Which fused kernel votes on `device`: "numba" (CPU), "triton" (CUDA) or "" (torch reference)."""
    if _FORCE_REFERENCE:
        return ""
    if device.type == "cpu":
        from . import kernels_cpu

        # the kernels' scratch grows with the class count (a tile of rows per class)
        return "numba" if kernels_cpu.available() and classes <= kernels_cpu.MAX_CLASSES else ""
    if device.type == "cuda":
        try:
            from . import kernels
        except ImportError:
            return ""
        fits = members <= kernels.MAX_MEMBERS and classes <= kernels.MAX_CLASSES
        return "triton" if kernels.available() and fits else ""
    return ""


# Tests set this to compare the fused kernels with the torch reference.
_FORCE_REFERENCE = False


def _chunk_numpy(source: torch.Tensor | np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) as float32 numpy, without a copy when the input already is float32."""
    if isinstance(source, torch.Tensor):
        part = source[:, start:stop]
        return (part if part.dtype == torch.float32 else part.to(torch.float32)).cpu().numpy()
    part = source[:, start:stop]
    with np.errstate(over="ignore"):  # a float64 beyond float32's range: reported by `_not_finite`
        return part if part.dtype == np.float32 else part.astype(np.float32)


def _contiguous_float32(source: torch.Tensor | np.ndarray) -> np.ndarray | None:
    """`source` as a float32 C-contiguous numpy array without copying, or None if it is not one."""
    if isinstance(source, torch.Tensor):
        ok = source.dtype == torch.float32 and source.device.type == "cpu" and source.is_contiguous()
        return source.numpy() if ok else None
    return source if source.dtype == np.float32 and source.flags.c_contiguous else None


def _not_finite(source: torch.Tensor | np.ndarray, chunk: np.ndarray | torch.Tensor, row: int, start: int):
    """Raise for row `row` of `chunk` (row ``start + row`` of `source`), which holds a value that is
    not finite in float32: NaN or infinity, or a finite float64 beyond float32's range."""
    bad = ~np.isfinite(np.asarray(chunk[:, row]))
    member, column = (int(i[0]) for i in np.nonzero(bad))
    value = float(source[member, start + row, column])
    if np.isfinite(value):
        raise EnsembleError(f"the 'logits' parameter must fit in float32, in which votes are computed; got {value:g} "
                            f"at member {member}, row {start + row} (beyond +-3.4e38): rescale the inputs")
    raise EnsembleError(
        f"the 'logits' parameter must be finite; got NaN or infinity at member {member}, row {start + row}")


PROBS_CHECKED_ROWS = 1024  # rows of each member checked as probabilities (inputs="probs")


def _check_probs(source: torch.Tensor | np.ndarray) -> None:
    """With ``inputs="probs"``, the first `PROBS_CHECKED_ROWS` rows of each member must be
    probabilities: no value below 0, each row summing to 1 within 1e-2 (bf16 rounding). That
    catches logits or scores passed as probabilities at no cost to a large vote."""
    part = source[:, :PROBS_CHECKED_ROWS]
    part = part.detach().to("cpu", torch.float64).numpy() if isinstance(part, torch.Tensor) else part.astype(np.float64)
    with np.errstate(invalid="ignore"):
        low = part < -1e-6
        off = np.abs(part.sum(axis=-1) - 1.0) > 1e-2
    if low.any():
        member, row, column = (int(i[0]) for i in np.nonzero(low))
        problem = f"a value of {part[member, row, column]:.4g}, below 0"
    elif off.any():
        member, row = (int(i[0]) for i in np.nonzero(off))
        problem = f"values summing to {part[member, row].sum():.4g}, not 1"
    else:
        return
    raise EnsembleError(f"inputs='probs': member {member}, row {row} has {problem}; pass probabilities (rows summing "
                        "to 1), or logits with inputs='logits'")


def _log_probs(source: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = source if isinstance(source, torch.Tensor) else torch.from_numpy(np.asarray(source, dtype=np.float32))
    return torch.log(x.to(torch.float32).clamp_min(torch.finfo(torch.float32).tiny))


def _as_source(logits: ArrayLike) -> torch.Tensor | np.ndarray:
    """Validate the logits' shape and type without converting the whole input at once."""
    if isinstance(logits, torch.Tensor):
        source: torch.Tensor | np.ndarray = logits.detach()
        if logits.is_complex() or logits.dtype == torch.bool:
            raise EnsembleError(
                f"the 'logits' parameter must hold real numbers; got {logits.dtype}"
            )
    else:
        if isinstance(logits, Mapping):  # members keyed by name: the order of the stack is the caller's to give
            raise EnsembleError("the 'logits' parameter must be a (members, rows, classes) array; got a dict: stack "
                                "its arrays in member order, e.g. np.stack([logits[name] for name in names])")
        try:
            source = np.asarray(logits)
        except ValueError:  # a ragged nested list
            raise EnsembleError("the 'logits' parameter must be a (members, rows, classes) array; got nested "
                                "sequences of unequal lengths") from None
        if source.dtype.kind not in "iuf":
            raise EnsembleError(
                f"the 'logits' parameter must hold real numbers; got {source.dtype}"
            )
    shape = tuple(int(n) for n in source.shape)
    if len(shape) != 3:
        raise EnsembleError(
            f"the 'logits' parameter must have shape (members, rows, classes); got shape {shape}"
        )
    if shape[0] == 0 or shape[2] == 0:
        raise EnsembleError(
            f"the 'logits' parameter needs at least one member and one class; got shape {shape}"
        )
    return source


def _chunk(
    source: torch.Tensor | np.ndarray, start: int, stop: int, device: torch.device
) -> torch.Tensor:
    """Rows [start, stop) of every member as a finite float32 tensor on ``device``."""
    if isinstance(source, np.ndarray):
        x = torch.from_numpy(_chunk_numpy(source, start, stop)).contiguous()
    else:
        x = source[:, start:stop].to(device=device, dtype=torch.float32)
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0][1])
        _not_finite(source, x.cpu().numpy(), row, start)
    return x


def _member_vector(value: ArrayLike | None, name: str, members: int, default: float) -> np.ndarray:
    """One float64 entry per member, or an EnsembleError naming the parameter."""
    if value is None:
        return np.full(members, default, dtype=np.float64)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        vector = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise EnsembleError(
            f"the {name!r} parameter must be a sequence of numbers; got {value!r}"
        ) from None
    if vector.ndim != 1 or vector.shape[0] != members:
        got = f"{vector.shape[0]} entries" if vector.ndim == 1 else f"shape {vector.shape}"
        raise EnsembleError(
            f"the {name!r} parameter must have one entry per member ({members}); got {got}"
        )
    return vector
