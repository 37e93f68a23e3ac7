"""The `Ensemble` class: trained members keyed by name, voted, saved as a JSON manifest.

An ensemble directory holds ``ensemble.json`` (labels, vote method, weights, member paths),
``members/<name>/`` (Hugging Face directories) and, after `evaluate`, ``predictions.csv``,
``report.json`` and ``report.md``. ``ensemble.json`` is written last, so a directory that has
it is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .aggregate import Vote, aggregate
from .batching import Collator, Encoded, encode, length_sorted_batches
from .data import TextDataset, iter_table
from .errors import EnsembleError
from .members import Member, device_of, load_member
from .recipe import VOTE_METHODS
from .report import append_predictions, build_report, write_predictions, write_report

MANIFEST = "ensemble.json"
FORMAT = "ensemble/1"


class Ensemble:
    """Members that vote. Load a fit or vote output with `Ensemble.load`.

    Example:
        >>> ens = Ensemble.load("runs/demo")  # doctest: +SKIP
        >>> ens.predict(["a gripping, beautifully acted film"])  # doctest: +SKIP
        ['positive']
        >>> ens.predict_proba([("A man plays.", "Someone plays.")]).shape  # pairs too  # doctest: +SKIP
        (1, 2)
    """

    def __init__(self, members: Sequence[Member], method: str = "soft", weights: dict[str, float] | None = None,
                 batch_size: int = 64):
        if method not in VOTE_METHODS:
            raise EnsembleError(f"the 'method' parameter must be one of {{'hard', 'soft'}}; got '{method}'")
        if not members:
            raise EnsembleError("an ensemble needs at least one member")
        names = [m.name for m in members]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise EnsembleError(f"members: two members are named '{dupes[0]}'; give each its own name (NAME=DIR)")
        weights = dict(weights or {})
        for name, w in weights.items():
            if name not in names:
                raise EnsembleError(f"weights: no member named '{name}'; members: {', '.join(names)}")
            if not (np.isfinite(w) and w >= 0):
                raise EnsembleError(f"weights.{name}: must be a finite number >= 0; got {w!r}")
        self.members = {m.name: m for m in members}
        self.labels = list(members[0].labels)
        for m in members[1:]:
            if sorted(m.labels) != sorted(self.labels):
                raise EnsembleError(f"member '{m.name}' has labels {m.labels} but member '{members[0].name}' has "
                                    f"{self.labels}; members must be trained on the same label names")
        for m in members[1:]:
            if m.text_pair != members[0].text_pair:
                kinds = {True: "sentence pairs", False: "single texts"}
                raise EnsembleError(f"member '{m.name}' was trained on {kinds[m.text_pair]} but member "
                                    f"'{members[0].name}' on {kinds[members[0].text_pair]}; they cannot vote together")
        self.classes_ = np.array(self.labels, dtype=object)
        self.method = method
        self.weights = {n: float(weights.get(n, 1.0)) for n in names}
        if not any(self.weights.values()):
            raise EnsembleError("weights: at least one member needs a weight > 0")
        self.text_pair = members[0].text_pair
        self.batch_size = batch_size

    # ------------------------------------------------------------ loading and saving

    @classmethod
    def load(cls, path: str | Path, device: str | Sequence[str] = "auto") -> "Ensemble":
        """Open a directory written by ``ensemble fit`` or ``ensemble vote``; see `to` for `device`."""
        path = Path(path)
        manifest_file = path / MANIFEST
        if not manifest_file.is_file():
            raise EnsembleError(f"ensemble '{path}': no {MANIFEST}; pass the --out directory of a finished "
                                "'ensemble fit' or 'ensemble vote'")
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise EnsembleError(f"ensemble '{path}': {MANIFEST} is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("members"), dict):
            raise EnsembleError(f"ensemble '{path}': {MANIFEST} is not an ensemble manifest (format '{FORMAT}')")
        root = path.resolve()
        members = []
        for name, rel in manifest["members"].items():
            member_dir = (root / str(rel)).resolve()
            if root not in member_dir.parents:
                raise EnsembleError(f"ensemble '{path}': member '{name}' path '{rel}' points outside the ensemble directory")
            members.append(load_member(member_dir, name))
        return cls(members, manifest.get("method", "soft"), manifest.get("weights")).to(device)

    @classmethod
    def from_dirs(cls, dirs: dict[str, str | Path], method: str = "soft", weights: dict[str, float] | None = None,
                  device: str | Sequence[str] = "auto") -> "Ensemble":
        """Members from their directories, keyed by name."""
        return cls([load_member(d, name) for name, d in dirs.items()], method, weights).to(device)

    def data_columns(self) -> dict:
        """The data columns (text, text_pair, label) the first member was trained with, if recorded."""
        member = next(iter(self.members.values()))
        try:
            return json.loads((member.path / "recipe.json").read_text(encoding="utf-8")).get("data", {})
        except (OSError, TypeError, ValueError):
            return {}

    def manifest(self) -> dict:
        return {"format": FORMAT, "labels": self.labels, "method": self.method, "weights": self.weights,
                "text_pair": self.text_pair, "members": {name: f"members/{name}" for name in self.members}}

    def save(self, path: str | Path) -> None:
        """Write the manifest and the members (hard links where possible) under `path`."""
        path = Path(path)
        for name, member in self.members.items():
            target = path / "members" / name
            if member.path is not None and member.path.resolve() != target.resolve():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(member.path, target, copy_function=_link_or_copy)
        write_json(path / MANIFEST, self.manifest())

    # ------------------------------------------------------------ predicting

    def to(self, device: str | Sequence[str] = "auto") -> "Ensemble":
        """Place the members: ``"auto"`` spreads them over all GPUs (round robin), else CPU.

        A single device (``"cpu"``, ``"cuda:1"``) takes every member; a list spreads them over it.
        Members on different GPUs then predict concurrently.
        """
        if device == "auto":
            count = torch.cuda.device_count()
            devices = [f"cuda:{i}" for i in range(count)] if count else ["cpu"]
        elif isinstance(device, str):
            devices = [device]
        else:
            devices = list(device)
        for d in devices:
            kind, _, index = str(d).partition(":")
            ok = (kind == "cpu" and not index) or (
                kind == "cuda" and (not index or index.isdigit()) and int(index or 0) < torch.cuda.device_count())
            if not ok:
                raise EnsembleError(f"device: must be 'auto', 'cpu' or 'cuda[:N]' with N below the number of GPUs "
                                    f"({torch.cuda.device_count()}); got '{d}'")
        for k, member in enumerate(self.members.values()):
            member.model.to(devices[k % len(devices)])
        return self

    def member_logits(self, texts: Sequence, pairs: Sequence[str] | None = None) -> np.ndarray:
        """Logits of every member, shape (members, rows, classes), columns in `self.labels` order.

        Texts are tokenized once per distinct tokenizer (members fine-tuned from one checkpoint
        share the token ids); members on different GPUs run concurrently, in bf16 autocast.
        """
        texts, pairs = self._split_pairs(texts, pairs)
        members = list(self.members.values())
        out = np.empty((len(members), len(texts), len(self.labels)), dtype=np.float32)
        encodings: dict[str, Encoded] = {}
        for member in members:
            key = member.tokenizer_key or member.name
            if key not in encodings:
                encodings[key] = encode(member.tokenizer, texts, pairs, member.max_length)

        def run(indices: list[int]) -> None:
            for k in indices:
                member = members[k]
                order = [member.labels.index(label) for label in self.labels]
                enc = encodings[member.tokenizer_key or member.name]
                out[k] = _predict_logits(member, enc, self.batch_size)[:, order]

        by_device: dict[str, list[int]] = {}
        for k, member in enumerate(members):
            by_device.setdefault(str(device_of(member.model)), []).append(k)
        if len(by_device) > 1:
            with ThreadPoolExecutor(len(by_device)) as pool:
                list(pool.map(run, by_device.values()))
        else:
            run(list(range(len(members))))
        return out

    def vote(self, texts: Sequence, pairs: Sequence[str] | None = None, member_details: bool = True) -> Vote:
        """The full vote: labels, scores, confidence, agreement, member predictions."""
        weights = [self.weights[n] for n in self.members]
        return aggregate(self.member_logits(texts, pairs), self.method, weights, member_details=member_details)

    def predict(self, texts: Sequence, pairs: Sequence[str] | None = None) -> list[str]:
        """Ensemble label names. `texts` are strings, or (text, text_pair) tuples."""
        return [self.labels[i] for i in self.vote(texts, pairs, member_details=False).labels]

    def predict_proba(self, texts: Sequence, pairs: Sequence[str] | None = None) -> np.ndarray:
        """(rows, classes) probabilities in `classes_` order; soft voting only."""
        if self.method != "soft":
            raise EnsembleError("predict_proba needs soft voting (method 'soft'); a hard vote gives labels and "
                                "vote shares, not probabilities: use predict(), or vote() for the shares")
        return self.vote(texts, pairs, member_details=False).scores

    def _split_pairs(self, texts: Sequence, pairs: Sequence[str] | None) -> tuple[list[str], list[str] | None]:
        texts = list(texts)
        if pairs is None and texts and isinstance(texts[0], (tuple, list)):
            if any(len(t) != 2 for t in texts):
                raise EnsembleError("texts: give strings, or (text, text_pair) tuples of two strings")
            pairs = [t[1] for t in texts]
            texts = [t[0] for t in texts]
        if pairs is not None and len(pairs) != len(texts):
            raise EnsembleError(f"pairs: {len(pairs)} pair texts for {len(texts)} texts; give one per text")
        if self.text_pair and pairs is None:
            raise EnsembleError("these members were trained on sentence pairs; give (text, text_pair) tuples or pairs=")
        if not self.text_pair and pairs is not None:
            raise EnsembleError("these members were trained on single texts, not pairs; pass plain strings")
        return [str(t) for t in texts], pairs


@torch.inference_mode()
def _predict_logits(member: Member, enc: Encoded, batch_size: int) -> np.ndarray:
    """One member's logits in input order; batches of similar length, padded per batch."""
    collate = Collator(member.tokenizer.pad_token_id)
    device = device_of(member.model)
    logits = np.empty((len(enc), member.model.config.num_labels), dtype=np.float32)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for rows in length_sorted_batches(enc.lengths(), batch_size):
            batch = {k: v.to(device, non_blocking=True) for k, v in collate([enc[i] for i in rows]).items()}
            logits[rows] = member.model(**batch).logits.float().cpu().numpy()
    return logits


def predict_file(ens: Ensemble, data: str | Path, out: str | Path, *, text: str = "text", text_pair: str | None = None,
                 label: str | None = "label", chunk_rows: int = 10_000, progress: bool = True) -> int:
    """Stream `data` through the ensemble into the CSV `out`, `chunk_rows` rows at a time.

    Memory is bounded by the chunk, not the file. The columns are those of predictions.csv
    (the gold label only when the file has one). Written to a temporary file and renamed at the
    end, so `out` never holds a partial result. Returns the number of rows written.

    Example:
        >>> predict_file(Ensemble.load("runs/demo"), "big.csv", "big-predictions.csv")  # doctest: +SKIP
        1000000
    """
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    names, rows = list(ens.members), 0
    bar = tqdm(desc="predict", unit="rows", disable=not progress, mininterval=0.5 if sys.stderr.isatty() else 30)
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            for chunk in iter_table(data, chunk_rows=chunk_rows, text=text, text_pair=text_pair, label=label,
                                    field="--data", require_label=False):
                vote = ens.vote(chunk.texts, chunk.pairs)
                append_predictions(handle, names=names, labels=ens.labels, vote=vote, texts=chunk.texts,
                                   pairs=chunk.pairs, y_true=_gold(ens, chunk, "--data"), header=rows == 0)
                rows += len(chunk)
                bar.update(len(chunk))
        os.replace(tmp, out)
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    return rows


def _gold(ens: Ensemble, ds: TextDataset, split: str) -> np.ndarray | None:
    """Gold labels as indices into `ens.labels`; an error names a label the members do not know."""
    if ds.labels is None:
        return None
    unknown = sorted(set(ds.labels) - set(ens.labels))
    if unknown:
        raise EnsembleError(f"{split}: label '{unknown[0]}' is not one the members know ({', '.join(ens.labels)})")
    index = {label: i for i, label in enumerate(ens.labels)}
    return np.array([index[y] for y in ds.labels])


def evaluate(ens: Ensemble, ds: TextDataset, split: str, out: Path) -> dict:
    """Vote on `ds`, write predictions.csv, report.json and report.md into `out`; return the report."""
    vote = ens.vote(ds.texts, ds.pairs)
    y_true = _gold(ens, ds, split)
    names = list(ens.members)
    report = build_report(names=names, labels=ens.labels, vote=vote, method=ens.method, weights=ens.weights,
                          y_true=y_true, texts=ds.texts, pairs=ds.pairs, split=split)
    write_predictions(out / "predictions.csv", names=names, labels=ens.labels, vote=vote, texts=ds.texts,
                      pairs=ds.pairs, y_true=y_true)
    write_report(out, report)
    return report


def write_json(path: Path, obj) -> None:
    """Write JSON through a temporary file and a rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
