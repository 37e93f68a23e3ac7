"""Resumable training state: what a member's run needs to continue after a hard kill.

A checkpoint lives next to the member directory being trained (``members/.<name>.ckpt``):
two slots ``state-0`` / ``state-1`` alternate, each holding Accelerate's `save_state` (model,
optimizer, scheduler, RNG of every process) and the best epoch's weights and validation logits so far; then
``progress.json`` is replaced atomically to name the complete slot. A kill at any moment leaves
the previous slot and its manifest intact. ``log.jsonl`` records every step and epoch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .config import MemberConfig, recipe_dict
from .files import write_json
from .provenance import base_fingerprint, learned_settings, local_base, setting_changes

PROGRESS = "progress.json"
BEST = "best.safetensors"
BEST_LOGITS = "best_logits.safetensors"  # the best epoch's validation logits, for the vote
LOG = "log.jsonl"


def checkpoint_dir(member_dir: Path) -> Path:
    """Where the member being trained into `member_dir` keeps its checkpoints and step log."""
    return member_dir.parent / f".{member_dir.name}.ckpt"


@dataclass
class MadeWith:
    """What a member's checkpoint was made with: it is resumed only when all of it matches
    (`fingerprint`), and when not, `changes` says what differs.

    Example:
        >>> a = MadeWith.of(MemberConfig("b", init="scratch", arch="bert"), ["x", "y"], {"train": "1", "valid": "2"})
        >>> a.changes(replace(a, processes=2))
        'another number of processes (1 -> 2)'
    """

    settings: dict  # `learned_settings`; without `model` for a local directory, which `base` stands for
    base: str | None  # `base_fingerprint`
    labels: list[str]
    rows: dict  # `Splits.rows`
    processes: int
    teacher: list | None  # a student's (temperature, hard-label weight, hash of the teacher's probabilities)

    @classmethod
    def of(cls, cfg: MemberConfig, labels: list[str], rows: dict, processes: int = 1, teacher=None) -> MadeWith:
        settings, base = learned_settings(recipe_dict(cfg)), base_fingerprint(cfg)
        if local_base(cfg) is not None and base is not None:
            settings.pop("model")  # the same files elsewhere (a moved project) are the same start
        return cls(settings, base, list(labels), dict(rows), processes, None if teacher is None else list(teacher))

    def fingerprint(self) -> str:
        return fingerprint(asdict(self))

    @staticmethod
    def legacy(cfg: MemberConfig, labels: list[str], rows: dict, processes: int = 1, teacher=None) -> str:
        """The fingerprint versions before `MadeWith` gave a checkpoint (every setting, no base
        files): such a checkpoint is still resumed when it matches, rather than lost to an upgrade."""
        return fingerprint(recipe_dict(cfg), labels, rows, processes, None if teacher is None else tuple(teacher))

    def changes(self, now: MadeWith) -> str:
        """What `now` changes from this, in words ("" when nothing does)."""
        said = []
        if settings := setting_changes(self.settings, now.settings):
            said.append(f"other settings ({settings})")
        if self.base != now.base:
            said.append("other base model files")
        if self.labels != now.labels:
            said.append(f"other labels ({self.labels} -> {now.labels})")
        if self.rows != now.rows:
            said.append("other data (" + ", ".join(k for k in ("train", "valid") if self.rows.get(k) != now.rows.get(k))
                        + " rows)")
        if self.processes != now.processes:
            said.append(f"another number of processes ({self.processes} -> {now.processes})")
        if self.teacher != now.teacher:
            said.append("another teacher")
        return ", ".join(said)


@dataclass
class Progress:
    """Where training stands: the epoch in progress and how many of its batches are done."""

    fingerprint: str
    micro_batch_size: int
    epoch: int = 1
    batches_done: int = 0
    loss_sum: float = 0.0  # running train loss of the epoch in progress
    seen: int = 0
    history: list[dict] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = 0
    stale: int = 0
    steps_done: int | None = None  # optimizer steps (and their log lines) when this was saved
    slot: int = -1  # the slot holding this state; -1 before the first save
    made_with: MadeWith | None = None  # what `fingerprint` was computed from (None in older checkpoints)
    started: str | None = None  # when training of the member began (UTC, ISO 8601)
    seconds: float = 0.0  # wall seconds spent training it up to this state


def read_progress(root: Path) -> Progress | None:
    """The progress saved in checkpoint directory `root`, whatever recipe it belongs to, or None."""
    try:
        progress = Progress(**json.loads((root / PROGRESS).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    try:
        progress.made_with = MadeWith(**progress.made_with) if isinstance(progress.made_with, dict) else None
    except TypeError:  # another version's record: only the fingerprint is compared then
        progress.made_with = None
    return progress


class Checkpoint:
    """Save and restore one member's training state under `root`.

    Example:
        >>> ckpt = Checkpoint(Path("runs/x/members/.bert.ckpt"), fingerprint="...")  # doctest: +SKIP
        >>> progress = ckpt.load()  # None when there is nothing to resume  # doctest: +SKIP
    """

    def __init__(self, root: Path, fingerprint: str, made_with: MadeWith | None = None, legacy: str | None = None):
        self.root = root
        self.fingerprint = fingerprint
        self.made_with = made_with  # what the fingerprint was computed from, kept beside it
        self.legacy = legacy  # `MadeWith.legacy`: what an older version's checkpoint of the same member holds
        self._log = None  # log.jsonl, opened once: it is written every optimizer step

    def load(self, main: bool = True) -> Progress | None:
        """The saved progress, or None if there is none or it belongs to another recipe. The
        epoch's running loss in it covers every process's rows: a process other than the `main`
        one gets zero instead, so that the sum over processes counts each row once."""
        progress = read_progress(self.root)
        if progress is None or not self.slot_dir(progress.slot).is_dir():
            return None
        if not matches(progress, self.fingerprint, self.legacy):
            return None
        progress.fingerprint, progress.made_with = self.fingerprint, self.made_with  # its next save: this version's
        if not main:
            progress.loss_sum, progress.seen = 0.0, 0
        return progress

    def slot_dir(self, slot: int) -> Path:
        return self.root / f"state-{slot}"

    def save(self, accelerator, progress: Progress, best_state: dict | None,
             best_logits: torch.Tensor | None = None) -> None:
        """Write the state into the free slot, then point progress.json at it (all processes call this)."""
        from safetensors.torch import save_file

        slot = 1 - progress.slot if progress.slot in (0, 1) else 0
        target = self.slot_dir(slot)
        written = progress
        if accelerator.num_processes > 1:
            # the epoch's running loss over every process's rows: the main process alone takes
            # it back on a resume (`load`), the others start from zero
            sums = accelerator.reduce(torch.tensor([progress.loss_sum, float(progress.seen)], dtype=torch.float64,
                                                   device=accelerator.device), "sum").tolist()
            written = replace(progress, loss_sum=sums[0], seen=int(sums[1]))
        if accelerator.is_main_process:
            shutil.rmtree(target, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(target))
        # every process moves on to this slot: a rank that kept the old one wrote its RNG state
        # into the slot in use, and resumed with another rank's draws (a resumed run then differed)
        progress.slot = written.slot = slot
        if accelerator.is_main_process:
            if best_state is not None:
                save_file({k: v.contiguous() for k, v in best_state.items()}, str(target / BEST))
            if best_logits is not None:
                save_file({"logits": best_logits.contiguous()}, str(target / BEST_LOGITS))
            write_json(self.root / PROGRESS, asdict(written))
        accelerator.wait_for_everyone()

    def restore(self, accelerator, progress: Progress) -> tuple[dict | None, torch.Tensor | None]:
        """Load the model, optimizer, scheduler and RNG state; return the best weights so far and
        that epoch's validation logits (None where not saved)."""
        from safetensors.torch import load_file

        accelerator.load_state(str(self.slot_dir(progress.slot)))
        best, logits = self.slot_dir(progress.slot) / BEST, self.slot_dir(progress.slot) / BEST_LOGITS
        return (load_file(str(best)) if best.is_file() else None,
                load_file(str(logits))["logits"] if logits.is_file() else None)

    def log(self, record: dict) -> None:
        """Append one JSON line to log.jsonl (main process only: the caller checks)."""
        if self._log is None:
            self.root.mkdir(parents=True, exist_ok=True)
            # line-buffered: every record is on disk before the next step, as a kill may come any time
            self._log = open(self.root / LOG, "a", encoding="utf-8", buffering=1)
        self._log.write(json.dumps(record) + "\n")

    def trim_log(self, step: int, epoch: int) -> None:
        """Cut log.jsonl back to the checkpoint being resumed: the steps after optimizer step `step`
        and the epoch lines from `epoch` on were written after it, and will be written again.

        They are always the file's tail, so it is truncated in place. (A worker's parent cuts it
        first, before its worker resumes: `workers._Member`.)"""
        path = self.root / LOG
        try:
            with open(path, "r+b") as f:
                keep = 0
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:  # a line cut by the kill
                        break
                    if (record.get("event") == "step" and record.get("step", 0) > step) or \
                            (record.get("event") == "epoch" and record.get("epoch", 0) >= epoch):
                        break
                    keep += len(line)
                f.truncate(keep)
        except OSError:
            pass

    def clear(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.root, ignore_errors=True)


def matches(progress: Progress, fingerprint: str, legacy: str | None = None) -> bool:
    """Whether a saved `progress` is the checkpoint of a member now made with `fingerprint` (or, for
    a checkpoint of a version before `MadeWith`, `legacy`)."""
    return progress.fingerprint == fingerprint or (
        progress.made_with is None and legacy is not None and progress.fingerprint == legacy)


def fingerprint(*parts) -> str:
    """A stable hash of everything that must match for a checkpoint to be resumed."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's weights (the best epoch's, kept while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
