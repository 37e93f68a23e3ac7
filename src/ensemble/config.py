"""The recipe's types: what can be configured, with its allowed values and ranges.

Plain frozen dataclasses, built and validated once by `ensemble.recipe.load_recipe` (which also
re-exports them): `DataConfig`, `TrainConfig`, `MemberConfig`, `VoteConfig`, `Recipe`. The
`CHOICES` and `RANGES` tables say what each field of that name accepts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ARCHES = ("albert", "bert", "electra", "roberta")
SIZES = ("tiny", "mini", "small", "medium", "base")
OPTIMIZERS = ("adam", "adamax", "adamw", "rmsprop", "sgd")
SCHEDULERS = ("constant", "cosine", "exponential", "linear", "step")
BEST_METRICS = ("accuracy", "macro_f1", "valid_loss")
MIXED_PRECISIONS = ("bf16", "fp16", "no")  # training arithmetic (`devices.PREDICT_PRECISIONS`: prediction's)
VOTE_METHODS = ("hard", "soft", "weighted", "selection", "stacking")
LEARNED_METHODS = ("weighted", "selection", "stacking")  # fitted on the validation split
ABSTAIN_ON = ("agreement", "confidence")
QUOTINGS = ("none", "csv")  # how a .tsv file's quote characters are read
BAD_ROWS = ("error", "skip")
ON_DIVERGE = ("skip", "stop")
TRACKERS = ("aim", "clearml", "comet_ml", "dvclive", "mlflow", "swanlab", "tensorboard", "trackio", "wandb")


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled texts are and which columns hold what."""

    train: Path
    valid: Path | None = None
    test: Path | None = None
    valid_fraction: float = 0.1  # split off train (stratified, seeded) when no valid file is given
    split_seed: int = 42
    text: str = "text"
    text_pair: str | None = None
    label: str = "label"
    on_bad_rows: str = "error"
    quoting: str = "none"  # tab-separated files: "none" (a quote is text) or "csv" (pandas' to_csv(sep="\t"))
    labels: tuple[str, ...] | None = None  # the classes in their order (ordinal ones: low, medium, high); default sorted
    keep_columns: tuple[str, ...] = ()  # copied into predictions.csv from the file reported on (an id to join on)


@dataclass(frozen=True)
class TrainConfig:
    """Every training knob; `[defaults]` sets them for all members, a member may override any."""

    lr: float = 5e-5
    batch_size: int = 32  # effective train batch: micro-batch x grad_accum
    eval_batch_size: int = 64
    epochs: int = 3
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0  # sgd and rmsprop only
    weight_decay: float = 0.0
    scheduler: str = "linear"
    warmup_ratio: float = 0.0  # share of all optimizer steps spent warming up linearly from 0
    step_size: int = 1  # epochs between lr drops, "step" scheduler
    gamma: float = 0.1  # lr factor per drop ("step") or per epoch ("exponential")
    max_length: int = 128
    max_grad_norm: float = 1.0  # 0 disables clipping
    grad_accum: int = 1
    mixed_precision: str = "no"
    seed: int = 42
    dropout: float | None = None  # overrides the model's hidden and attention dropout
    trainable_layers: int | None = None  # None: all; 0: freeze the encoder; k: only the top k layers
    patience: int | None = None  # early stopping: epochs without improvement before stopping
    best_metric: str = "valid_loss"
    group_by_length: bool = True  # batches of similar length (shuffled): less padding per batch
    compile: bool = False  # torch.compile the model (opt-in: compiling takes a while)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, slower
    checkpoint_every: int = 0  # also save resumable state every N optimizer steps (0: each epoch only)
    log_with: tuple[str, ...] = ()  # Accelerate trackers: tensorboard, wandb, mlflow, ...
    on_diverge: str = "stop"  # NaN/inf loss: "stop" the fit, or "skip" this member and vote without it

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.grad_accum


@dataclass(frozen=True)
class MemberConfig:
    """One member: where its weights come from and how it trains."""

    name: str
    model: str | None = None  # hub id or local directory (init = "pretrained")
    init: str = "pretrained"
    arch: str | None = None  # scratch only
    size: str = "tiny"  # scratch only
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class VoteConfig:
    """How the members are combined; learned parts are fitted on the validation split only."""

    method: str = "soft"  # hard, soft, or learned on validation: weighted, selection, stacking
    weights: dict[str, float] = field(default_factory=dict)  # fixed weights (hard and soft only)
    calibrate: bool = True  # per-member temperature scaling, fitted on validation, before voting
    selection_rounds: int = 50  # "selection": greedy picks (with replacement)
    stacking_folds: int = 5  # "stacking": cross-fitting folds on the validation split
    abstain_below: float | None = None  # answer "abstain" when abstain_on is below this
    abstain_on: str = "confidence"  # or "agreement": share of member weight behind the answer
    # Or let validation choose abstain_below: answer at least this share of the rows, or
    # answer as many rows as possible at this accuracy (`combine.abstain_threshold`).
    abstain_coverage: float | None = None
    abstain_accuracy: float | None = None

    @property
    def abstain_target(self) -> tuple[str, float] | None:
        """("coverage" | "accuracy", value) when the threshold is chosen on validation."""
        if self.abstain_coverage is not None:
            return "coverage", self.abstain_coverage
        if self.abstain_accuracy is not None:
            return "accuracy", self.abstain_accuracy
        return None


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Load with `load_recipe`."""

    path: Path  # the recipe's directory: its data paths are relative to it
    data: DataConfig
    defaults: TrainConfig
    members: tuple[MemberConfig, ...]
    vote: VoteConfig
    file_name: str = ""  # the recipe file's name, which errors found later name (as the recipe's own do)

    @property
    def where(self) -> str:
        """What errors about this recipe start with: its file's name."""
        return self.file_name or self.path.name

    def member(self, name: str) -> MemberConfig:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(name)


# Allowed values and ranges, checked once for every field of the same name.
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS, "best_metric": BEST_METRICS,
    "mixed_precision": MIXED_PRECISIONS, "method": VOTE_METHODS, "on_bad_rows": BAD_ROWS,
    "init": ("pretrained", "scratch"), "arch": ARCHES, "size": SIZES, "log_with": TRACKERS,
    "on_diverge": ON_DIVERGE, "abstain_on": ABSTAIN_ON, "quoting": QUOTINGS,
}
# (low, high, low_inclusive[, high_inclusive=True]): value must satisfy low </<= value <=/< high
RANGES: dict[str, tuple] = {
    "lr": (0, 10, False), "batch_size": (1, 1 << 20, True), "eval_batch_size": (1, 1 << 20, True),
    "epochs": (1, 10_000, True), "eps": (0, 1, False), "momentum": (0, 1, True),
    "weight_decay": (0, 10, True), "warmup_ratio": (0, 1, True), "step_size": (1, 10_000, True),
    "gamma": (0, 1, False), "max_length": (8, 8192, True), "max_grad_norm": (0, 1e6, True),
    "grad_accum": (1, 1 << 16, True), "dropout": (0, 1, True, False), "trainable_layers": (0, 1000, True),
    "patience": (1, 10_000, True), "valid_fraction": (0, 0.9, False), "split_seed": (0, 2**32 - 1, True),
    "seed": (0, 2**32 - 1, True), "checkpoint_every": (0, 1 << 40, True),
    "selection_rounds": (1, 100_000, True), "stacking_folds": (2, 100, True), "abstain_below": (0, 1, True),
    "abstain_coverage": (0, 1, False), "abstain_accuracy": (0, 1, False),
}
# Settings that only some choices read: (the field that chooses, the choices that read the setting).
USED_BY = {
    "betas": ("optimizer", ("adam", "adamax", "adamw")),
    "eps": ("optimizer", ("adam", "adamax", "adamw", "rmsprop")),
    "momentum": ("optimizer", ("rmsprop", "sgd")),
    "gamma": ("scheduler", ("exponential", "step")),
    "step_size": ("scheduler", ("step",)),
    "selection_rounds": ("method", ("selection",)),
    "stacking_folds": ("method", ("stacking",)),
}
# The word that sets an optional field back to its default (TOML has no null, and a member may
# need to undo a [defaults] value): trainable_layers = "all", patience = "none", dropout = "model".
DEFAULT_WORDS: dict[str, str] = {"trainable_layers": "all", "patience": "none", "dropout": "model"}
MEMBER_KEYS = ("name", "model", "init", "arch", "size")


def name_problem(name: object) -> str | None:
    """Why `name` cannot name a member (it names a directory and CSV columns), or None.

    Example:
        >>> name_problem("bert-2"), name_problem("a/b")
        (None, "use letters, digits, '-', '_' or '.' (it names a directory); got 'a/b'")
    """
    if not isinstance(name, str) or not name.strip():
        return f"every member needs a name (a non-empty string); got {name!r}"
    if not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        return f"use letters, digits, '-', '_' or '.' (it names a directory); got '{name}'"
    if name == "ensemble":  # predictions.csv has ensemble_label next to <member>_label columns
        return "'ensemble' is reserved; choose another name"
    return None


def recipe_dict(obj: Any) -> Any:
    """A JSON-ready copy of a recipe object (paths as strings), for the saved, resolved recipe."""
    if dataclasses.is_dataclass(obj):
        return {f.name: recipe_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [recipe_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: recipe_dict(v) for k, v in obj.items()}
    return obj
