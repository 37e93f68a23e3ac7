"""The training loop: one member, one Accelerate loop, read top to bottom.

`train_member` builds the member, tokenizes once, trains with `accelerator.accumulate`,
evaluates every epoch with `gather_for_metrics`, keeps the best epoch's weights and writes a
Hugging Face directory atomically. Members are trained one after another, each with its own
optimizer, schedule, precision and seed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .batching import Collator, encode, length_sorted_batches
from .card import write_model_card
from .data import TextDataset
from .errors import EnsembleError
from .members import METRICS_FILE, RECIPE_FILE, build_member, freeze, parameter_count
from .recipe import DataConfig, MemberConfig, TrainConfig, recipe_dict
from .report import classification_metrics


@dataclass
class Splits:
    """The labelled data a member trains and is selected on."""

    train: TextDataset
    valid: TextDataset


def train_member(cfg: MemberConfig, splits: Splits, labels: list[str], data: DataConfig, out_dir: Path,
                 progress: bool = True) -> dict:
    """Train one member and write it to `out_dir`; returns its metrics (as in metrics.json).

    Example:
        >>> metrics = train_member(recipe.members[0], splits, ["neg", "pos"], recipe.data,
        ...                        Path("runs/x/members/bert"))  # doctest: +SKIP
        >>> metrics["best_epoch"]  # doctest: +SKIP
        3
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    t = cfg.train
    if t.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise EnsembleError(f"members[{cfg.name}].mixed_precision: fp16 needs a GPU; use \"bf16\" or \"no\" on CPU")
    # Each member has its own precision and accumulation: start Accelerate's shared state afresh.
    AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision=t.mixed_precision, gradient_accumulation_steps=t.grad_accum)
    set_seed(t.seed)

    # build the member and tokenize once
    texts = splits.train.texts + (splits.train.pairs or [])
    model, tokenizer = build_member(cfg, labels, texts)
    freeze(model, t.trainable_layers)
    label_id = {name: i for i, name in enumerate(labels)}
    train_set = encode(tokenizer, splits.train.texts, splits.train.pairs, t.max_length,
                       [label_id[y] for y in splits.train.labels])
    valid_set = encode(tokenizer, splits.valid.texts, splits.valid.pairs, t.max_length,
                       [label_id[y] for y in splits.valid.labels])
    collate = Collator(tokenizer.pad_token_id)
    train_dl = DataLoader(train_set, batch_size=t.micro_batch_size, shuffle=True, collate_fn=collate,
                          generator=torch.Generator().manual_seed(t.seed))
    valid_dl = DataLoader(valid_set, batch_sampler=length_sorted_batches(valid_set.lengths(), t.eval_batch_size),
                          collate_fn=collate)
    steps_per_epoch = math.ceil(len(train_dl) / t.grad_accum)
    optimizer = make_optimizer(model, t)
    scheduler = make_scheduler(optimizer, t, steps_per_epoch)
    model, optimizer, train_dl, valid_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, valid_dl, scheduler)

    total_params, trainable = parameter_count(model)
    # In a log file (no terminal) redraw rarely: one line per 30 s instead of one per batch.
    bar = tqdm(total=len(train_dl) * t.epochs, desc=cfg.name, unit="batch", dynamic_ncols=True,
               mininterval=0.2 if sys.stderr.isatty() else 30,
               disable=not (progress and accelerator.is_local_main_process))
    bar.write(f"{cfg.name}: {cfg.model or f'{cfg.arch}-{cfg.size} from scratch'}, "
              f"{total_params / 1e6:.1f}M parameters ({trainable / 1e6:.1f}M trainable), "
              f"{len(train_set)} train / {len(valid_set)} valid rows")
    history: list[dict] = []
    best_value, best_epoch, best_state, stale = None, 0, None, 0
    for epoch in range(1, t.epochs + 1):
        # train one epoch
        model.train()
        loss_sum, seen, start = 0.0, 0, time.perf_counter()
        for batch in train_dl:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and t.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            rows = batch["input_ids"].shape[0]
            loss_sum += loss.item() * rows
            seen += rows
            elapsed = time.perf_counter() - start
            bar.set_postfix(epoch=f"{epoch}/{t.epochs}", loss=f"{loss_sum / seen:.4f}",
                            samples_s=f"{seen * accelerator.num_processes / max(elapsed, 1e-9):.0f}")
            bar.update(1)
        if not math.isfinite(loss_sum):
            raise EnsembleError(f"members[{cfg.name}]: training loss became {loss_sum} in epoch {epoch}; "
                                f"lower lr (now {t.lr:g}) or enable max_grad_norm")
        train_seconds = time.perf_counter() - start

        # evaluate on the validation split
        metrics = evaluate(model, valid_dl, accelerator, len(labels))
        record = {"epoch": epoch, "train_loss": loss_sum / seen, **metrics, "lr": scheduler.get_last_lr()[0],
                  "seconds": train_seconds, "samples_per_s": seen * accelerator.num_processes / train_seconds}
        history.append(record)
        bar.write(f"{cfg.name} epoch {epoch}: train_loss {record['train_loss']:.4f}  valid_loss {metrics['valid_loss']:.4f}  "
                  f"accuracy {metrics['accuracy']:.4f}  macro_f1 {metrics['macro_f1']:.4f}")

        # keep the best epoch's weights; stop early when patience runs out
        value = metrics[t.best_metric]
        better = best_value is None or (value < best_value if t.best_metric == "valid_loss" else value > best_value)
        if better:
            best_value, best_epoch, stale = value, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in accelerator.unwrap_model(model).state_dict().items()}
        else:
            stale += 1
            if t.patience is not None and stale >= t.patience:
                bar.write(f"{cfg.name}: no better {t.best_metric} for {stale} epochs; stopping early")
                break
    bar.close()

    # save the best epoch as a standard Hugging Face directory, atomically
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(best_state)
    result = {"member": cfg.name, "best_metric": t.best_metric, "best_epoch": best_epoch,
              "best": history[best_epoch - 1], "history": history}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            unwrapped.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            resolved = {"member": recipe_dict(cfg), "data": recipe_dict(data), "labels": labels}
            (tmp / RECIPE_FILE).write_text(json.dumps(resolved, indent=2), encoding="utf-8")
            (tmp / METRICS_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
            write_model_card(tmp / "README.md", cfg, labels, result, len(train_set), len(valid_set))
            replace_dir(tmp, out_dir)
        finally:
            # after a crash, leave no half-written member behind (a loadable one, even)
            shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return result


@torch.inference_mode()
def evaluate(model, loader, accelerator, n_classes: int) -> dict:
    """Validation loss, accuracy, macro precision / recall / F1 and the confusion matrix."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        logits, labels = accelerator.gather_for_metrics((logits, labels))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    metrics = classification_metrics(labels.numpy(), logits.argmax(-1).numpy(), n_classes)
    return {"valid_loss": loss, **metrics}


def make_optimizer(model, t: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimizer; biases and LayerNorm weights are exempt from weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, eps=t.eps)
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr, betas=t.betas, eps=t.eps)
    if t.optimizer == "adamax":
        return torch.optim.Adamax(groups, lr=t.lr, betas=t.betas, eps=t.eps)
    if t.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=t.lr, eps=t.eps, momentum=t.momentum)
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum)


def make_scheduler(optimizer, t: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning-rate multiplier per optimizer step: linear warmup, then the recipe's shape.

    `step` and `exponential` change the rate once per epoch (every `step_size` epochs for step).

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = make_scheduler(opt, TrainConfig(scheduler="step", gamma=0.5, epochs=2), 10)
        >>> [round(sched.lr_lambdas[0](s), 3) for s in (0, 9, 10, 19)]
        [1.0, 1.0, 0.5, 0.5]
    """
    total = max(1, steps_per_epoch * t.epochs)
    warmup = int(round(t.warmup_ratio * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        epoch = step // steps_per_epoch
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if t.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        if t.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if t.scheduler == "step":
            return t.gamma ** (epoch // t.step_size)
        if t.scheduler == "exponential":
            return t.gamma ** epoch
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place so a reader never sees a half-written one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    moved = final.exists()
    if moved:
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if moved:
            os.replace(old, final)  # put the previous directory back rather than lose it
        raise
    shutil.rmtree(old, ignore_errors=True)

