"""The model card written into every member directory (its README.md)."""

from __future__ import annotations

import platform
from pathlib import Path

from .markup import Span, md_inline
from .recipe import MemberConfig, TrainConfig, recipe_dict


def write_model_card(path: Path, cfg: MemberConfig, labels: list[str], result: dict, n_train: int, n_valid: int,
                     arch: str, distilled: tuple[float, float, int] | None = None) -> None:
    """Write a Hugging Face model card: base model, hyperparameters, metrics table, versions.
    `arch` is the model's architecture (its config's ``model_type``, e.g. ``"roberta"``);
    `distilled` the (temperature, hard-label weight, unlabelled training rows) of a student
    trained on an ensemble's labels.

    Example:
        >>> write_model_card(Path("members/bert/README.md"), cfg, ["neg", "pos"], metrics, 900, 100, "bert")  # doctest: +SKIP
    """
    import accelerate
    import tokenizers
    import torch
    import transformers

    base = cfg.model if cfg.init == "pretrained" else f"none ({cfg.arch}, size {cfg.size}, trained from scratch)"
    hyper = recipe_dict(cfg.train)
    defaults = recipe_dict(TrainConfig())
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "tags: [ensemble, text-classification]",
        "---",
        "",
        f"# {cfg.name}",
        "",
        f"A `{arch}` sequence classifier trained by `ensemble` "
        + ("as a student distilled from a voted ensemble (its `distill.json` compares the two)" if distilled
           else "as one member of a voted ensemble")
        + ". It is a standard Hugging Face directory: `AutoModelForSequenceClassification.from_pretrained(this_dir)` "
        "opens it.",
        "",
        f"- Base model: {base}",
        f"- Labels: {', '.join(md_inline(Span(label, 'code')) for label in labels)}",
        f"- Data: {n_train} training rows"
        + (f" ({distilled[2]} of them unlabelled, taught by the ensemble alone)" if distilled and distilled[2] else "")
        + f", {n_valid} validation rows",
        *([f"- Distilled from an ensemble: trained on its soft labels at temperature {distilled[0]:g}, "
           f"with {distilled[1]:g} of the loss on the gold labels (`ensemble distill`)"] if distilled else []),
        f"- Best epoch: {result['best_epoch']} of {len(result['history'])} (by {result['best_metric']})",
        "",
        "## Hyperparameters",
        "",
        "Values that differ from the library's defaults are marked *(not default)*.",
        "",
        "| field | value |",
        "|---|---|",
    ]
    for key, value in hyper.items():
        mark = "" if value == defaults[key] else " *(not default)*"
        lines.append(f"| {key} | {value}{mark} |")
    lines += ["", "## Validation metrics per epoch", "",
              "| epoch | train loss | valid loss | accuracy | macro-F1 | macro precision | macro recall |",
              "|---|---|---|---|---|---|---|"]
    for row in result["history"]:
        best = " **(best)**" if row["epoch"] == result["best_epoch"] else ""
        lines.append(f"| {row['epoch']}{best} | {row['train_loss']:.4f} | {row['valid_loss']:.4f} | {row['accuracy']:.4f} | "
                     f"{row['macro_f1']:.4f} | {row['macro_precision']:.4f} | {row['macro_recall']:.4f} |")
    lines += ["", "## Framework versions", "",
              f"- Transformers {transformers.__version__}", f"- PyTorch {torch.__version__}",
              f"- Accelerate {accelerate.__version__}", f"- Tokenizers {tokenizers.__version__}",
              f"- Python {platform.python_version()}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
