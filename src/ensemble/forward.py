"""The members' forward pass: texts checked, tokenized once per tokenizer, run in length-sorted batches.

`members_logits` is what `Ensemble.member_logits` runs: chunks of rows, the members of each device
in turn and the devices concurrently.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import KeysView, Mapping, Sequence, Set
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from .batching import Collator, Encoded, encode, length_sorted_batches
from .devices import device_of
from .errors import EnsembleError
from .firsttoken import first_token_only
from .members import Member

# Batches queued on a GPU before their logits are read back (see `predict_logits`).
READBACK_BATCHES = 32
PREDICT_CHUNK = 20_000  # rows tokenized at a time by `members_logits`: bounds its memory


def members_logits(members: Sequence[Member], labels: Sequence[str], texts: list[str], pairs: list[str] | None,
                   batch_size: int, precision: str = "auto", truncated: dict[str, int] | None = None,
                   progress: str | bool | None = None) -> np.ndarray:
    """Logits of every member, shape (members, rows, classes), columns in `labels` order, for
    checked `texts` (and `pairs`; see `split_pairs`). `truncated` and `progress` are as in
    `Ensemble.member_logits`.

    Example:
        >>> members_logits(list(ens.members.values()), ens.labels, ["the story is gripping."], None, 64).shape  # doctest: +SKIP
        (4, 1, 3)
    """
    out = np.empty((len(members), len(texts), len(labels)), dtype=np.float32)
    if not texts:  # nothing to tokenize (the tokenizer would fail on an empty batch)
        return out
    label = progress if isinstance(progress, str) else ""  # progress=True: a bar without a name
    bar = tqdm(total=len(texts), desc=f"{label} ({len(members)} members)".lstrip(), unit="rows", disable=not progress,
               delay=1, mininterval=0.5 if sys.stderr.isatty() else 30)
    rows_bar = _RowsBar(bar, len(members))
    by_device: dict[str, list[int]] = {}
    for k, member in enumerate(members):
        by_device.setdefault(str(device_of(member.model)), []).append(k)
    orders = [[member.labels.index(label) for label in labels] for member in members]  # to `labels`' columns
    with bar:
        # Token ids take ~5 KB a row as Python lists: rows go through in chunks, so that memory
        # stays bounded whatever the input's size (length-sorting within a chunk pads as little).
        for start in range(0, len(texts), PREDICT_CHUNK):
            stop = min(start + PREDICT_CHUNK, len(texts))
            cut: dict[str, int] = {}
            encodings = encode_per_tokenizer(members, texts[start:stop], None if pairs is None else pairs[start:stop], cut)
            for name, n in cut.items() if truncated is not None else ():
                truncated[name] = truncated.get(name, 0) + n

            def run(indices: list[int]) -> None:
                for k in indices:
                    member = members[k]
                    enc = encodings[member.tokenizer_key or member.name]
                    out[k, start:stop] = predict_logits(member, enc, batch_size, precision, rows_bar)[:, orders[k]]

            if len(by_device) > 1:
                with ThreadPoolExecutor(len(by_device)) as pool:
                    list(pool.map(run, by_device.values()))
            else:
                run(list(range(len(members))))
    return out


class _RowsBar:
    """Counts the rows every member has run as input rows on `bar`: 4 members over 100 rows show
    100 rows done, at the rate rows are answered (members may run in threads, one per GPU)."""

    def __init__(self, bar, members: int) -> None:
        self.bar, self.members, self.member_rows, self.shown = bar, members, 0, 0
        self.lock = threading.Lock()

    def update(self, n: int) -> None:
        with self.lock:
            self.member_rows += n
            rows = self.member_rows // self.members
            if rows > self.shown:
                self.bar.update(rows - self.shown)
                self.shown = rows


def split_pairs(texts: Sequence, pairs: Sequence[str] | None, text_pair: bool) -> tuple[list[str], list[str] | None]:
    """`texts` (strings, or (text, text_pair) tuples) and `pairs` as two checked lists of strings.

    Example:
        >>> split_pairs([("A man plays.", "Someone plays.")], None, text_pair=True)
        (['A man plays.'], ['Someone plays.'])
    """
    shaped_as_pairs = isinstance(texts, np.ndarray) and texts.ndim == 2 and texts.shape[1:] == (2,)
    one_pair = isinstance(texts, tuple) and len(texts) == 2 and all(isinstance(t, str) for t in texts)
    texts = _text_list(texts, "texts")
    if pairs is None and texts and isinstance(texts[0], (tuple, list)) and not text_pair:
        raise EnsembleError(f"texts[0] is a {type(texts[0]).__name__} ({texts[0]!r:.60}); these members were trained on "
                            "single texts, not pairs: pass plain strings")
    if pairs is None and texts and isinstance(texts[0], (tuple, list)):
        for i, t in enumerate(texts):
            if not isinstance(t, (tuple, list)):
                raise EnsembleError(f"texts[{i}] is a {type(t).__name__} ({t!r:.40}) where texts[0] is a pair: give "
                                    "every row as a (text, text_pair) tuple, or every row as a string")
            if len(t) != 2:
                column_major = i == 0 and len(texts) == 2 and len(t) == len(texts[1])
                hint = (": texts look like [texts, text_pairs]; give rows, e.g. list(zip(texts, text_pairs)), "
                        "or pairs=text_pairs" if column_major else "")
                raise EnsembleError(f"texts[{i}] has {len(t)} item{'s' if len(t) != 1 else ''} ({t!r:.60}); a row "
                                    f"of a pair task is (text, text_pair){hint}")
        pairs = [t[1] for t in texts]
        texts = [t[0] for t in texts]
    elif pairs is None and not texts and (shaped_as_pairs or text_pair):
        pairs = []  # no rows: nothing to tell pairs from single texts by, and nothing to predict
    texts = _strings(texts, "texts")
    if pairs is not None:
        pairs = _strings(_text_list(pairs, "pairs"), "pairs")
        if len(pairs) != len(texts):
            raise EnsembleError(f"pairs: {len(pairs)} pair texts for {len(texts)} texts; give one per text")
    if text_pair and pairs is None:
        hint = ": one pair alone goes in a list, [(text, text_pair)]" if one_pair else ""
        raise EnsembleError(f"these members were trained on sentence pairs; give (text, text_pair) tuples or pairs={hint}")
    if not text_pair and pairs is not None:
        raise EnsembleError("these members were trained on single texts, not pairs; pass plain strings")
    return texts, pairs


def encode_per_tokenizer(members: Sequence[Member], texts: list[str], pairs: list[str] | None,
                         truncated: dict[str, int] | None = None) -> dict[str, Encoded]:
    """Token ids keyed by tokenizer: members fine-tuned from one checkpoint share one encoding.

    Look a member's up with ``member.tokenizer_key or member.name``. `truncated`, when given,
    receives per member how many rows were cut to its max_length.
    """
    encodings: dict[str, Encoded] = {}
    for member in members:
        key = member.tokenizer_key or member.name
        if key not in encodings:
            try:
                encodings[key] = encode(member.tokenizer, texts, pairs, member.max_length)
            except (Exception, KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - a Rust panic in tokenizers (pyo3's PanicException)
                raise EnsembleError(f"member '{member.name}': its tokenizer failed on the input ({type(exc).__name__}: "
                                    f"{str(exc).strip()[:200]}); tokenizer.json may be damaged: recopy or retrain "
                                    "the member") from None
        if truncated is not None:
            truncated[member.name] = encodings[key].truncated
    return encodings


@torch.inference_mode()
def predict_logits(member: Member, enc: Encoded, batch_size: int, precision: str = "auto", bar=None) -> np.ndarray:
    """One member's logits in input order; batches of similar length, padded per batch; `bar`
    (a tqdm bar) advances by each batch's rows as they are read back.

    On a GPU the host queues batches ahead of the device: token ids go through pinned memory
    (a copy from pageable memory waits for the device), and logits are read back every
    `READBACK_BATCHES` batches rather than after each one (each read-back waits for the device).
    """
    collate = Collator(member.tokenizer.pad_token_id)
    device = device_of(member.model)
    gpu = device.type == "cuda"
    logits = np.empty((len(enc), member.model.config.num_labels), dtype=np.float32)
    bf16 = precision == "bf16" or (precision == "auto" and gpu)
    queued: list[tuple[list[int], torch.Tensor]] = []  # (rows, their logits on the device)

    def read_back() -> None:
        if queued:
            values = torch.cat([out for _, out in queued]).cpu().numpy()
            start = 0
            for rows, _ in queued:
                logits[rows] = values[start:start + len(rows)]
                start += len(rows)
                if bar is not None:
                    bar.update(len(rows))
            queued.clear()

    # the classifier reads token 0 only: so does the last layer, while predicting (`firsttoken`)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16), first_token_only(member.model):
        for rows in length_sorted_batches(enc.lengths(), batch_size):
            batch = collate([enc[i] for i in rows])
            if gpu:
                batch = {k: v.pin_memory() for k, v in batch.items()}
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            queued.append((rows, member.model(**batch).logits.float()))
            if len(queued) >= READBACK_BATCHES:  # (the same on a CPU, where reading back is free)
                read_back()
    read_back()
    return logits


def _text_list(texts, name: str) -> list:
    """Any ordered iterable of texts as a list. Refused: a lone string (iterating it would predict
    each character), a DataFrame or a dict (they iterate over column names or keys) and a set
    (no order). A 2-D array of two columns is a list of (text, text_pair) rows.
    """
    if isinstance(texts, (str, bytes)):
        raise EnsembleError(f"{name}: give a list of strings; got a single {type(texts).__name__} (wrap it: [text])")
    if hasattr(texts, "columns") and hasattr(texts, "iloc"):  # a pandas DataFrame
        raise EnsembleError(f"{name}: got a DataFrame, which iterates over its column names; pass its text column "
                            "(df['text']), or pairs as df[['text', 'text_pair']].to_numpy()")
    if isinstance(texts, (Mapping, Set)) and not isinstance(texts, KeysView):  # a dict's keys keep its order
        kind = "a dict (its keys would be the texts)" if isinstance(texts, Mapping) else "a set (it has no order)"
        raise EnsembleError(f"{name}: give a list of strings; got {kind}")
    if isinstance(texts, np.ndarray) and texts.ndim == 2 and texts.shape[1] == 2:
        return [tuple(row) for row in texts.tolist()]
    if isinstance(texts, np.ndarray) and texts.ndim != 1:
        raise EnsembleError(f"{name}: give a 1-D list of strings, or (N, 2) rows of (text, text_pair); "
                            f"got an array of shape {texts.shape}")
    try:
        return list(texts)
    except TypeError:
        raise EnsembleError(f"{name}: give a list of strings; got {type(texts).__name__}") from None


def _strings(texts: list, name: str) -> list[str]:
    """`texts` when every item is a string (numpy's str_ included), else the first offender, named."""
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            missing = (t is None or (isinstance(t, (float, np.floating)) and t != t)
                       or type(t).__name__ in ("NAType", "NaTType"))
            hint = ": fill or drop the missing texts" if missing else ""
            if isinstance(t, (tuple, list)) and name == "texts":
                hint = (": with pairs= given, texts are the first texts only (strings); give (text, text_pair) "
                        "tuples or pairs=, not both" if i == 0 else
                        ": give every row as a (text, text_pair) tuple, or plain strings with pairs=")
            raise EnsembleError(f"{name}[{i}] must be a string; got {type(t).__name__} ({t!r:.40}){hint}")
        if not t.strip():  # as in data files: a label for no text would be noise
            raise EnsembleError(f"{name}[{i}] is {'blank' if t else 'empty'} ({t!r:.40}): fill or drop the empty texts")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate: JSON with a broken escape, an emoji cut in half
            raise EnsembleError(f"{name}[{i}] is not valid Unicode: lone surrogate {t[exc.start]!r} at character "
                                f"{exc.start}; drop or replace it (e.g. text.encode('utf-8', 'replace').decode())") from None
    return [str(t) for t in texts]
