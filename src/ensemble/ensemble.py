"""The `Ensemble` class: trained members keyed by name, voted, saved as a JSON manifest.

An ensemble directory holds ``ensemble.json`` (labels, vote method, weights, temperatures, the
stacker's coefficients, abstention, member paths), ``members/<name>/`` (Hugging Face directories)
and, after `evaluate.evaluate`, ``predictions.csv`` and the report (see `manifest`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import combine, manifest as manifest_file, votefit
from .aggregate import Vote, aggregate
from .data import TextDataset
from .devices import check_devices, check_precision
from .errors import EnsembleError
from .forward import members_logits, split_pairs
from .labels import sorted_labels
from .manifest import FORMAT, MANIFEST
from .members import Member, load_member, recorded_valid_logits, saved_recipe
from .recipe import VoteConfig, name_problem
from .stacking import Stacker
from .settings import (ABSTAIN, Checked, ReadOnlyDict, check_abstain_below, check_abstain_label, check_abstain_on,
                       check_batch_size, check_ensemble_temperature, check_method, per_member)

__all__ = ["ABSTAIN", "MANIFEST", "Ensemble", "check_abstain_label"]


class Ensemble:
    """Members that vote. Load a fit or vote output with `Ensemble.load`.

    Example:
        >>> ens = Ensemble.load("runs/demo")  # doctest: +SKIP
        >>> ens.predict(["the story is gripping.", "the final act is thrilling but the plot is messy."])  # doctest: +SKIP
        ['positive', 'neutral']
        >>> rte = Ensemble.load("runs/rte")  # members trained on sentence pairs  # doctest: +SKIP
        >>> rte.predict_proba([("A man plays.", "Someone plays.")]).shape  # doctest: +SKIP
        (1, 2)
        >>> fast = Ensemble.load("runs/demo", precision="bf16")  # bf16 autocast, also on AMX CPUs  # doctest: +SKIP
    """

    def __init__(self, members: Sequence[Member], method: str = "soft", weights: dict[str, float] | None = None,
                 batch_size: int = 64, *, temperatures: dict[str, float] | None = None,
                 stacker: Stacker | None = None, abstain_below: float | None = None,
                 abstain_on: str = "confidence", ensemble_temperature: float = 1.0, precision: str = "auto",
                 labels: Sequence[str] | None = None):
        check_method(method)
        check_abstain_on(abstain_on)
        check_abstain_below(abstain_below)
        check_batch_size(batch_size)
        ensemble_temperature = check_ensemble_temperature(ensemble_temperature)
        if not members:
            raise EnsembleError("an ensemble needs at least one member")
        odd = next((m for m in members if not isinstance(m, Member)), None)
        if odd is not None:
            raise EnsembleError(f"the 'members' parameter must hold members (load_member(dir)); got a "
                                f"{type(odd).__name__} ({odd!r:.60}): for directories use Ensemble.from_dirs("
                                "{name: dir}) or Ensemble.load(dir)")
        names = [m.name for m in members]
        for name in names:
            problem = name_problem(name)
            if problem:
                raise EnsembleError(f"member name: {problem}; name it as NAME=DIR (CLI) or load_member(dir, name)")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise EnsembleError(f"members: two members are named '{dupes[0]}'; give each its own name (NAME=DIR)")
        self.members = {m.name: m for m in members}
        for m in members[1:]:
            if sorted(m.labels) != sorted(members[0].labels):
                raise EnsembleError(f"member '{m.name}' has labels {m.labels} but member '{members[0].name}' has "
                                    f"{members[0].labels}; members must be trained on the same label names")
        # the class order of probabilities, reports and ties ("the first label"): the members' own
        # when they share one (a recipe's data.labels), else sorted, so that it never depends on
        # which member is listed first
        orders = {tuple(m.labels) for m in members}
        self._labels = list(members[0].labels) if len(orders) == 1 else sorted_labels(members[0].labels)
        if labels is not None:
            if (not all(isinstance(label, str) for label in labels) or sorted(labels) != sorted(self._labels)
                    or len(set(labels)) != len(labels)):
                raise EnsembleError(f"labels: {list(labels)!r} are not the members' labels {self._labels!r} (in any "
                                    "order); give each of them once, or leave labels out")
            self._labels = list(labels)
        for m in members[1:]:
            if m.text_pair != members[0].text_pair:
                kinds = {True: "sentence pairs", False: "single texts"}
                raise EnsembleError(f"member '{m.name}' was trained on {kinds[m.text_pair]} but member "
                                    f"'{members[0].name}' on {kinds[members[0].text_pair]}; they cannot vote together")
        if stacker is not None and (stacker.n_members_, stacker.n_classes_) != (len(members), len(self._labels)):
            raise EnsembleError(f"stacker: fitted for {stacker.n_members_} members x {stacker.n_classes_} classes; this "
                                f"ensemble has {len(members)} x {len(self._labels)}: fit it again")
        self.method = method
        # weighted and selection votes learn their weights (fit_vote); given, they count as learned
        self.weights_learned = method not in LEARNED_WEIGHTS
        self.weights = weights
        self.temperatures = temperatures
        self.ensemble_temperature = ensemble_temperature  # on the soft vote's probabilities
        self.stacker = stacker
        self.abstain_below = abstain_below
        self.abstain_on = abstain_on
        self.text_pair = members[0].text_pair
        self.batch_size = batch_size
        self.precision = precision

    # Settings people change on a loaded ensemble (``ens.batch_size = 256``) are checked on
    # assignment as in __init__, so a wrong value fails there, not deep inside predict.
    method = Checked(lambda ens, value: _assign_method(ens, value),
                     "How members combine: soft, hard, weighted, selection or stacking. Switching to weighted "
                     "or selection asks for weights again (fit_vote, or assign weights).")
    weights = Checked(lambda ens, value: _assign_weights(ens, value),
                      "Member name -> vote weight (a read-only copy of the dict assigned). Assign a dict to "
                      "change them: members it leaves out get 1.0; given weights count as learned for weighted "
                      "and selection.")
    temperatures = Checked(lambda ens, value: ReadOnlyDict(per_member("temperatures", value, list(ens.members))),
                           "Member name -> softmax temperature (a read-only copy of the dict assigned; fit_vote "
                           "calibrates them). Assign a dict to change them: members it leaves out get 1.0.")
    ensemble_temperature = Checked(lambda ens, value: check_ensemble_temperature(value),
                                   "Temperature on the soft vote's probabilities (1: as averaged).")
    abstain_on = Checked(lambda ens, value: check_abstain_on(value),
                         "What abstain_below compares: 'confidence' or 'agreement'.")
    abstain_below = Checked(lambda ens, value: check_abstain_below(value, ens.labels),
                            "Rows whose abstain_on value is below this (0-1) are answered 'abstain'; None: never.")
    batch_size = Checked(lambda ens, value: check_batch_size(value), "Rows per forward pass of a member.")
    precision = Checked(lambda ens, value: check_precision(value), "'auto' (bf16 on GPUs), 'bf16' or 'fp32'.")

    @property
    def labels(self) -> list[str]:
        """The class names, in the order of probability columns, reports and ties (a copy)."""
        return list(self._labels)

    @labels.setter
    def labels(self, value) -> None:
        raise EnsembleError("labels: the class order is fixed when an ensemble is made (its weights, stacker and "
                            "saved manifest use it); for another order make one with Ensemble(members, labels=[...])")

    @property
    def classes_(self) -> np.ndarray:
        """`labels` as an array, as scikit-learn names it: the columns of `predict_proba`."""
        return np.array(self._labels, dtype=object)

    def __repr__(self) -> str:
        """What a notebook shows: how it votes, over which members and labels.

        Example:
            >>> Ensemble.load("runs/demo")  # doctest: +SKIP
            Ensemble(method='soft', members=['albert', 'electra', 'roberta', 'bert'], labels=['negative', 'neutral', 'positive'])
        """
        parts = [f"method={self.method!r}", f"members={list(self.members)}", f"labels={self._labels}"]
        if len(set(self.weights.values())) > 1 and self.method != "stacking":
            parts.append(f"weights={ {n: round(w, 4) for n, w in self.weights.items()} }")
        if self.abstain_below is not None:
            parts += [f"abstain_below={self.abstain_below:.4g}", f"abstain_on={self.abstain_on!r}"]
        if self.text_pair:
            parts.append("pairs=True")
        return f"Ensemble({', '.join(parts)})"

    # ------------------------------------------------------------ loading and saving

    @classmethod
    def load(cls, path: str | Path, device: str | Sequence[str] = "auto", precision: str = "auto") -> Ensemble:
        """Open a directory written by ``ensemble fit`` or ``ensemble vote``; see `to` for `device`
        and `check_precision` for `precision`."""
        check_devices(device)  # a wrong device or precision is reported before the members load
        check_precision(precision)
        manifest, members = manifest_file.read(path)
        stacker = manifest.get("stacker")
        try:
            ensemble = cls(members, manifest.get("method", "soft"), manifest.get("weights"),
                       temperatures=manifest.get("temperatures"),
                       stacker=None if stacker is None else Stacker.from_dict(stacker),
                       abstain_below=manifest.get("abstain_below"),
                       abstain_on=manifest.get("abstain_on", "confidence"),
                       ensemble_temperature=manifest.get("ensemble_temperature", 1.0),
                       precision=precision, labels=manifest.get("labels"))  # the stacker's and the report's order
        except EnsembleError as exc:
            message = str(exc)
            if message.startswith("labels:"):
                message = (f"labels {manifest.get('labels')!r} are not the members' labels {members[0].labels!r}; it "
                           "was edited or belongs to other members: vote them again ('ensemble vote')")
            raise EnsembleError(f"ensemble '{path}': {MANIFEST}: {message}") from None
        return ensemble.to(device)

    @classmethod
    def from_dirs(cls, dirs: dict[str, str | Path], method: str = "soft", weights: dict[str, float] | None = None,
                  device: str | Sequence[str] = "auto", precision: str = "auto", load_weights: bool = True,
                  **settings) -> Ensemble:
        """Members from their directories, keyed by name. With ``load_weights=False`` the members
        are only described (see `load_member`): the ensemble votes on given logits only. Other
        keywords (`batch_size`, `temperatures`, `abstain_below`, ...) are the constructor's.

        Example:
            >>> ens = Ensemble.from_dirs({"bert": "runs/p1/members/bert", "roberta": "runs/p1/members/roberta"},
            ...                          method="hard")  # doctest: +SKIP
            >>> list(ens.members), ens.labels  # doctest: +SKIP
            (['bert', 'roberta'], ['negative', 'neutral', 'positive'])
        """
        if not isinstance(dirs, dict):
            raise EnsembleError(f"Ensemble.from_dirs: 'dirs' must be a dict of member name -> directory, e.g. "
                                f"{{'bert': 'runs/demo/members/bert'}}; got {type(dirs).__name__}")
        return cls([load_member(d, name, weights=load_weights) for name, d in dirs.items()], method, weights,
                   precision=precision, **settings).to(device)

    def data_columns(self) -> dict:
        """The data settings (text, text_pair, label columns, quoting) the members were trained
        with, where every member that recorded one agrees (`differing_columns` has the others)."""
        by_key = self._columns_by_key()
        return {k: next(iter(values.values())) for k, values in by_key.items() if len(set(values.values())) == 1}

    def differing_columns(self) -> dict[str, dict[str, str]]:
        """Data settings the members were trained with different values of: {key: {member: value}}."""
        return {k: values for k, values in self._columns_by_key().items() if len(set(values.values())) > 1}

    def _columns_by_key(self) -> dict[str, dict[str, str]]:
        """{setting: {member: value}} from each member's recipe.json, for the members that recorded it."""
        by_key: dict[str, dict[str, str]] = {}
        for name, member in self.members.items():
            data = saved_recipe(member.path).get("data")
            for key, value in (data.items() if isinstance(data, dict) else ()):
                if key in ("text", "text_pair", "label", "quoting") and isinstance(value, str):
                    by_key.setdefault(key, {})[name] = value
        return by_key

    def training_files(self, split: str = "train") -> dict[str, Path]:
        """Member name -> the training file (or, with ``split="valid"``, the validation file) its
        recipe.json records (members made by ``fit``; a validation part split off the training
        file has no file of its own)."""
        files = {}
        for name, member in self.members.items():
            data = saved_recipe(member.path).get("data")
            path = data.get(split) if isinstance(data, dict) else None
            if isinstance(path, str):
                files[name] = Path(path)
        return files

    def manifest(self) -> dict:
        return {"format": FORMAT, "labels": list(self._labels), "method": self.method, "weights": dict(self.weights),
                "temperatures": dict(self.temperatures), "ensemble_temperature": self.ensemble_temperature,
                "stacker": None if self.stacker is None else self.stacker.to_dict(),
                "abstain_below": self.abstain_below, "abstain_on": self.abstain_on,
                "text_pair": self.text_pair, "members": {name: f"members/{name}" for name in self.members}}

    # ------------------------------------------------------------ fitting the vote

    def fit_vote(self, logits: np.ndarray, y: np.ndarray, vote: VoteConfig) -> dict:
        """Fit what the vote learns — temperatures, weights, the stacker — on validation logits.

        `logits` are `member_logits` of the validation split and `y` its label indices. Only
        the validation split is used, so a report on another split is honest. Returns what was
        fitted, for the report: temperatures, weights (or picks) and the validation score of the
        combiner (out-of-fold for stacking; in-sample for weighted and selection).

        Example:
            >>> info = ens.fit_vote(ens.member_logits(valid_texts), y_valid, VoteConfig("weighted"))  # doctest: +SKIP
            >>> info["weights"]  # doctest: +SKIP
            {'albert': 0.0, 'bert': 0.61, 'minilm': 0.39}
        """
        return votefit.fit_vote(self, logits, y, vote)

    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """Write the manifest and the members (hard links where possible) as directory `path`.

        The directory is built next to `path` and renamed into place, so `path` is never
        half-written. An existing `path` that is not an empty directory is replaced only with
        ``overwrite=True`` (its other files, such as a run's report, go with it).

        Example:
            >>> ens.save("runs/selected")  # doctest: +SKIP
        """
        manifest_file.save(self, path, overwrite)

    def write_into(self, path: Path) -> None:
        """Write the manifest and the members (hard links where possible) into the existing
        directory `path`, next to what it holds (the CLI's run directory, being built)."""
        manifest_file.write_into(self, path)

    # ------------------------------------------------------------ predicting

    def to(self, device: str | Sequence[str] = "auto") -> Ensemble:
        """Place the members: ``"auto"`` spreads them over all GPUs (round robin), else CPU.

        A single device (``"cpu"``, ``"cuda:1"``) takes every member; a list spreads them over it.
        Members on different GPUs then predict concurrently.

        Example:
            >>> ens = Ensemble.load("runs/demo").to(["cuda:0", "cuda:1"])  # doctest: +SKIP
        """
        devices = check_devices(device)
        for k, member in enumerate(self.members.values()):
            if member.model is not None:
                member.model.to(devices[k % len(devices)])
        return self

    def member_logits(self, texts: Sequence, pairs: Sequence[str] | None = None,
                      truncated: dict[str, int] | None = None, progress: str | bool | None = None) -> np.ndarray:
        """Logits of every member, shape (members, rows, classes), columns in `labels` order.

        Texts are tokenized once per distinct tokenizer (members fine-tuned from one checkpoint
        share the token ids); members on different GPUs run concurrently, in bf16 autocast unless
        `precision` says "fp32". Pass a dict as `truncated` to receive, per member, how many rows
        were cut to its max_length (added to the counts it holds; no rows, no counts). `progress`
        names a progress bar over the members' rows (True: one without a name), shown once the
        work has taken a second.

        Example:
            >>> cut = {}
            >>> Ensemble.load("runs/demo").member_logits(["the story is gripping."], truncated=cut).shape  # doctest: +SKIP
            (4, 1, 3)
            >>> cut  # doctest: +SKIP
            {'albert': 0, 'electra': 0, 'roberta': 0, 'bert': 0}
        """
        if truncated is not None and not isinstance(truncated, dict):
            raise EnsembleError(f"member_logits: the 'truncated' parameter must be a dict (it receives counts per "
                                f"member) or None; got {type(truncated).__name__}")
        texts, pairs = split_pairs(texts, pairs, self.text_pair)
        members = list(self.members.values())
        unloaded = [m.name for m in members if m.model is None]
        if unloaded:
            raise EnsembleError(f"member '{unloaded[0]}' was opened without its weights; open it with load_weights=True to predict")
        return members_logits(members, self._labels, texts, pairs, self.batch_size, self.precision, truncated, progress)

    def recorded_logits(self, valid: TextDataset) -> np.ndarray | None:
        """Every member's logits on `valid` as recorded when its best epoch was evaluated in
        training, shape (members, rows, classes) in `labels` order; None unless every member
        recorded them for exactly these rows (then use `member_logits`).

        They are the predictions each member's metrics.json reports (under bf16 autocast, with its
        rounding), so fitting a vote on the validation split needs no forward pass.
        """
        logits, rows = [], valid.fingerprint()  # hashed once, not once per member
        for member in self.members.values():
            recorded = None if member.path is None else recorded_valid_logits(member.path, valid, self._labels, rows)
            if recorded is None:
                return None
            logits.append(recorded)
        return np.stack(logits)

    def vote_logits(self, logits, member_details: bool = True) -> Vote:
        """Combine member logits (members, rows, classes; a NumPy array or a torch tensor of any
        float dtype, members in this ensemble's order) as this ensemble's method says.

        Example:
            >>> ens.vote_logits(ens.member_logits(["the story is gripping."])).labels  # doctest: +SKIP
            array([2])
        """
        logits = self._checked_logits(logits, "vote_logits")
        if not isinstance(member_details, (bool, np.bool_)):  # as aggregate says it, for every method
            raise EnsembleError(f"the 'member_details' parameter must be True or False; got {member_details!r}")
        if hasattr(logits, "detach") and self.method == "stacking":  # the stacker reads NumPy; aggregate takes either
            logits = logits.detach().float().cpu().numpy()
        if self.method in LEARNED_WEIGHTS and not self.weights_learned:
            raise EnsembleError(f"method '{self.method}' learns its weights on validation data first: call fit_vote "
                                "(the CLI's 'ensemble vote --valid FILE' or 'ensemble fit' do), or give them: weights= "
                                "or ens.weights = {name: weight}")
        names = list(self.members)
        temps = [self.temperatures[n] for n in names]
        weights = [self.weights[n] for n in names]
        if self.method == "hard" or logits.shape[1] == 0:  # no rows: nothing to rescale or stack
            method = "hard" if self.method == "hard" else "soft"
            return aggregate(logits, method, weights, temps, member_details=member_details)
        if self.method != "stacking":
            vote = aggregate(logits, "soft", weights, temps, member_details=member_details)
            if self.ensemble_temperature == 1.0:
                return vote
            scores = combine.soften(vote.scores, self.ensemble_temperature).astype(np.float32)
            return replace(vote, scores=scores, confidence=scores[np.arange(len(vote.labels)), vote.labels])
        if self.stacker is None:
            raise EnsembleError("method 'stacking' learns on validation data first: call fit_vote (the CLI's "
                                "'ensemble vote --valid FILE' or 'ensemble fit' do)")
        # member facts from the plain soft vote; the decision from the stacker
        base = aggregate(logits, "soft", None, temps, member_details=True)
        scores = self.stacker.predict_proba(combine.softmax(logits, np.asarray(temps))).astype(np.float32)
        labels = scores.argmax(axis=1)
        agreement = (base.member_labels == labels[None, :]).mean(axis=0).astype(np.float32)
        return replace(base, labels=labels, scores=scores, confidence=scores[np.arange(len(labels)), labels],
                       agreement=agreement,
                       **({} if member_details else {"member_labels": None, "member_confidence": None}))

    def abstained(self, vote: Vote) -> np.ndarray | None:
        """Rows the ensemble declines to answer (True), or None without ``abstain_below``."""
        if self.abstain_below is None:
            return None
        values = vote.confidence if self.abstain_on == "confidence" else vote.agreement
        return combine.abstain_mask(values, self.abstain_below)

    def _checked_logits(self, logits, where: str):
        """`logits` as an array (a tensor stays one) of shape (members, rows, classes) for this
        ensemble, else an error naming the shape expected."""
        if not hasattr(logits, "shape"):
            try:
                logits = np.asarray(logits, dtype=np.float32)
            except (TypeError, ValueError):
                raise EnsembleError(f"{where}: logits must be a (members, rows, classes) array of numbers; got a "
                                    f"{type(logits).__name__} that is not one (ragged, or not numbers)") from None
        shape = tuple(logits.shape)
        if len(shape) != 3 or shape[0] != len(self.members) or shape[2] != len(self._labels):
            raise EnsembleError(f"{where}: logits have shape {shape}; expected ({len(self.members)}, rows, "
                                f"{len(self._labels)}): members {list(self.members)} x rows x labels {self._labels}")
        return logits

    def vote(self, texts: Sequence, pairs: Sequence[str] | None = None, member_details: bool = True) -> Vote:
        """The full vote: labels, scores, confidence, agreement, member predictions.

        Example:
            >>> vote = Ensemble.load("runs/demo").vote(["the story is gripping.", "the plot is boring."])  # doctest: +SKIP
            >>> vote.labels, vote.agreement  # doctest: +SKIP
            (array([2, 0]), array([1., 1.], dtype=float32))
        """
        return self.vote_logits(self.member_logits(texts, pairs), member_details=member_details)

    def predict(self, texts: Sequence, pairs: Sequence[str] | None = None) -> list[str]:
        """Ensemble label names (``"abstain"`` below ``abstain_below``), one per text.

        `texts`: any iterable of strings, or of (text, text_pair) tuples; a lone string is refused
        (it would be read one character per text), and so are None / NaN items.

        Example:
            >>> Ensemble.load("runs/demo").predict(["the story is gripping.", "the plot is boring."])  # doctest: +SKIP
            ['positive', 'negative']
        """
        vote = self.vote(texts, pairs, member_details=False)
        abstain = self.abstained(vote)
        return [ABSTAIN if abstain is not None and abstain[row] else self._labels[i]
                for row, i in enumerate(vote.labels.tolist())]

    def predict_proba(self, texts: Sequence, pairs: Sequence[str] | None = None) -> np.ndarray:
        """(rows, classes) probabilities in `classes_` order; not for hard voting.

        Example:
            >>> Ensemble.load("runs/demo").predict_proba(["the story is gripping."]).round(2)  # doctest: +SKIP
            array([[0.02, 0.01, 0.96]], dtype=float32)
        """
        if self.method == "hard":
            raise EnsembleError("predict_proba needs probabilities, and a hard vote gives labels and vote shares: "
                                "use predict(), or vote() for the shares, or method 'soft'")
        return self.vote(texts, pairs, member_details=False).scores


LEARNED_WEIGHTS = ("weighted", "selection")  # methods whose weights are learned (fit_vote) or given


def _assign_method(ens: Ensemble, value: str) -> str:
    """`method`, checked; switching to a method that learns its weights asks for them again
    (weights learned or given for another method are not its own)."""
    check_method(value)
    if value not in LEARNED_WEIGHTS:
        ens.weights_learned = True  # soft and hard vote with any weights, equal by default
    elif value != getattr(ens, "_method", None):
        ens.weights_learned = False
    return value


def _assign_weights(ens: Ensemble, value: Mapping[str, float] | None) -> ReadOnlyDict:
    """`weights`, checked; given ones count as learned (see `_assign_method`)."""
    weights = ReadOnlyDict(per_member("weights", value, list(ens.members)))
    if value:
        ens.weights_learned = True
    return weights
