"""The training loop: one member, one Accelerate loop, read top to bottom.

`train_member` builds the member, tokenizes once, trains with `accelerator.accumulate`,
evaluates every epoch with `gather_for_metrics`, keeps the best epoch's weights and writes a
Hugging Face directory atomically. Each member has its own optimizer, schedule, precision and
seed; `ensemble.workers` runs several of these loops side by side, one member each.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .batching import Collator, EpochBatches, encode
from .card import write_model_card
from .checkpoint import LOG, PROGRESS, Checkpoint, MadeWith, Progress, checkpoint_dir, cpu_state, read_progress
from .cpu import clip_into_step, fast_dropout, folds_clip, keep_freed_memory
from .embedding_rows import EmbeddingRows
from .data import TextDataset
from .devices import check_mixed_precision
from .errors import EnsembleError
from .files import replace_dir
from .firsttoken import switch as switch_first_token
from .members import (METRICS_FILE, RECIPE_FILE, VALID_LOGITS, build_member, checkpoint_activations, drop_remote_code,
                      freeze, parameter_count, save_valid_logits)
from .optim import make_optimizer, make_scheduler
from .provenance import environment, utc_now
from .recipe import DataConfig, MemberConfig, recipe_dict
from .report import classification_metrics
from .teacher import IGNORE, Teacher, distill_loss


@dataclass
class Splits:
    """The labelled data a member trains and is selected on."""

    train: TextDataset
    valid: TextDataset

    @functools.cached_property
    def rows(self) -> dict[str, str]:
        """Fingerprints of both splits' rows: a member, or its checkpoint, is only reused on the same
        data. Hashed once per run, not once per member and use."""
        return {"train": self.train.fingerprint(), "valid": self.valid.fingerprint()}


def train_member(cfg: MemberConfig, splits: Splits, labels: list[str], data: DataConfig, out_dir: Path,
                 progress: bool = True, resume: bool = False, teacher: Teacher | None = None) -> dict:
    """Train one member and write it to `out_dir`; returns its metrics (as in metrics.json).

    Under ``accelerate launch`` every process runs this; the effective batch (`batch_size`) is
    the same for any number of processes. State is checkpointed each epoch (and every
    `checkpoint_every` optimizer steps) beside `out_dir`; with `resume` an interrupted run
    continues from its last checkpoint. On out-of-memory the micro-batch shrinks and gradient
    accumulation grows, keeping the effective batch. With a `teacher` the member is a student:
    it learns from the teacher's probabilities as well as the labels (`distill_loss`).

    Example:
        >>> metrics = train_member(recipe.members[0], splits, ["neg", "pos"], recipe.data,
        ...                        Path("runs/x/members/bert"))  # doctest: +SKIP
        >>> metrics["best_epoch"]  # doctest: +SKIP
        3
    """
    from accelerate.utils import find_executable_batch_size

    clock = (utc_now(), time.perf_counter())  # when this run began on the member, for its environment record
    t = cfg.train
    check_mixed_precision(cfg)
    world = process_state().num_processes
    if t.batch_size % (t.grad_accum * world):
        raise EnsembleError(f"members[{cfg.name}].batch_size: {t.batch_size} must be a multiple of grad_accum "
                            f"({t.grad_accum}) x processes ({world})")
    per_process = t.batch_size // world
    if use_cpu():
        keep_freed_memory()  # big gradients reuse their pages instead of faulting them in every step
    if teacher is None and any(y is None for y in splits.train.labels):
        raise EnsembleError(f"members[{cfg.name}]: training rows without a label need a teacher (ensemble distill)")
    if teacher is not None and teacher.probs.shape != (len(splits.train), len(labels)):
        raise EnsembleError(f"members[{cfg.name}]: teacher probabilities have shape {teacher.probs.shape}; "
                            f"expected ({len(splits.train)}, {len(labels)}) (train rows, classes)")
    taught = None if teacher is None else (teacher.temperature, teacher.hard_weight,
                                           hashlib.sha256(teacher.probs.astype(np.float32).tobytes()).hexdigest())
    made = MadeWith.of(cfg, labels, splits.rows, world, taught)
    ckpt = Checkpoint(checkpoint_dir(out_dir), made.fingerprint(), made, MadeWith.legacy(cfg, labels, splits.rows, world, taught))
    saved = ckpt.load(main=process_state().is_main_process) if resume else None
    if resume and saved is None and (other := read_progress(ckpt.root)) is not None:
        # a checkpoint of other settings, data or process count: say so, rather than start over unannounced
        if process_state().is_main_process:
            print(checkpoint_mismatch(cfg.name, other, made))
        process_state().wait_for_everyone()

    def start_over() -> None:  # nothing of an older run or attempt (its step log, its trackers' logs) may mix in
        if process_state().is_main_process:
            ckpt.clear()
            if cfg.train.log_with:  # where its trackers write (`_train_loop`)
                shutil.rmtree(out_dir.parent.parent / "logs" / cfg.name, ignore_errors=True)

    if saved is None:
        start_over()
        process_state().wait_for_everyone()

    def smaller(current: list[int]) -> int:
        # the next micro-batch that divides the per-process batch: the effective batch stays exact
        old = current[0]
        current[0] = max([d for d in range(1, current[0]) if per_process % d == 0], default=0)
        if current[0]:
            # the attempt's steps are done again from the start: its log lines and checkpoints go
            # (no barrier: another process may not have run out of memory)
            start_over()
            if process_state().is_main_process:
                print(f"{cfg.name}: out of memory at micro-batch {old}; training again from the start with micro-batch "
                      f"{current[0]} x {per_process // current[0]} accumulation steps (the effective batch stays "
                      f"{t.batch_size})", flush=True)
        return current[0]

    micro = [saved.micro_batch_size if saved else per_process // t.grad_accum]
    attempt = find_executable_batch_size(
        _train_loop, starting_batch_size=micro[0], reduce_batch_size_fn=lambda: smaller(micro))
    return attempt(cfg, splits, labels, data, out_dir, progress, ckpt, saved, per_process, teacher, clock)


def checkpoint_mismatch(name: str, other: Progress, now: MadeWith) -> str:
    """The line saying that a member's checkpoint `other` is not resumed, naming what differs where
    it was recorded (checkpoints of older versions record only a fingerprint).

    Example:
        >>> cfg = MemberConfig("b", init="scratch", arch="bert")
        >>> made = MadeWith.of(cfg, ["x", "y"], {})
        >>> checkpoint_mismatch("b", Progress("f", 8, epoch=2, batches_done=8, made_with=made), MadeWith.of(cfg, ["x", "y"], {}, 2))
        'b: its checkpoint (epoch 2, batch 8) was made with another number of processes (1 -> 2); training it from the start'
    """
    why = other.made_with.changes(now) if other.made_with is not None else ""
    return (f"{name}: its checkpoint (epoch {other.epoch}, batch {other.batches_done}) was made with "
            f"{why or 'other settings, data or number of processes'}; training it from the start")


def _train_loop(micro: int, cfg: MemberConfig, splits: Splits, labels: list[str], data: DataConfig, out_dir: Path,
                progress: bool, ckpt: Checkpoint, saved: Progress | None, per_process: int,
                teacher: Teacher | None, clock: tuple[str, float]) -> dict:
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.state import AcceleratorState
    from accelerate.utils import set_seed

    t = cfg.train
    if saved is not None and saved.micro_batch_size != micro:
        saved = None  # the saved optimizer steps assumed another micro-batch: start over
    # Each member (and each batch-size attempt) has its own precision and accumulation.
    AcceleratorState._reset_state()
    logs = out_dir.parent.parent / "logs"
    # On a GPU, batches are copied from pinned memory without waiting: a plain copy from pageable
    # memory synchronises the host with the device, so every step would wait for the previous
    # one to finish before queueing its first kernel (on an H200, the bare bf16 step of a
    # BERT-base member at batch 256 took 63 ms, the loop 81 ms; benchmarks/profile_step.py, mfu.py).
    cuda = not use_cpu()
    accelerator = Accelerator(mixed_precision=t.mixed_precision, gradient_accumulation_steps=per_process // micro,
                              log_with=list(t.log_with) or None, project_dir=str(logs), cpu=not cuda,
                              dataloader_config=DataLoaderConfiguration(non_blocking=cuda))
    set_seed(t.seed)

    # build the member and tokenize once
    texts = splits.train.texts + (splits.train.pairs or [])
    model, tokenizer = build_member(cfg, labels, texts)
    switch_first_token(model)  # the classifier reads token 0: the last layer computes only that
    freeze(model, t.trainable_layers)
    if accelerator.device.type == "cpu" and not t.compile:
        fast_dropout(model)  # same p and scaling; masks 10x faster to draw (torch.compile brings its own)
    if t.gradient_checkpointing:
        checkpoint_activations(model)
    label_id = {name: i for i, name in enumerate(labels)}
    train_set = encode(tokenizer, splits.train.texts, splits.train.pairs, t.max_length,
                       [IGNORE if y is None else label_id[y] for y in splits.train.labels])
    if teacher is not None:
        train_set.teacher = teacher.probs.astype(np.float32)
    valid_set = encode(tokenizer, splits.valid.texts, splits.valid.pairs, t.max_length,
                       [label_id[y] for y in splits.valid.labels])
    collate = Collator(tokenizer.pad_token_id)
    sampler = EpochBatches(train_set.lengths(), micro, t.seed, t.group_by_length)
    # Own generators: starting an iterator draws a seed from its loader's generator, and drawing it
    # from the global RNG would shift dropout after a resume (the iterator is created anew there).
    train_dl = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, generator=torch.Generator(),
                          pin_memory=cuda)
    # Validation rows in length order (little padding) in equal-size batches: across processes,
    # Accelerate evens out the last batch and gather_for_metrics drops the repeats.
    lengths = valid_set.lengths()  # once: it is computed afresh on each call
    by_length = sorted(range(len(valid_set)), key=lambda i: -lengths[i])
    numbered = [{**valid_set[i], "row": i} for i in range(len(valid_set))]  # logits go back in row order
    valid_dl = DataLoader(numbered, sampler=by_length, batch_size=t.eval_batch_size, collate_fn=collate,
                          generator=torch.Generator(), pin_memory=cuda)
    accum = per_process // micro
    optimizer = make_optimizer(model, t)
    if t.compile:
        model = torch.compile(model, dynamic=True)
    model, optimizer, train_dl, valid_dl = accelerator.prepare(model, optimizer, train_dl, valid_dl)
    # The schedule is sized by this process's optimizer steps (its share of the batches, the
    # last one padded by Accelerate), and Accelerate steps a prepared scheduler once per process
    # per optimizer step: one tick per process, so that any number of processes follows the
    # one-process schedule (sizing it before `prepare`, by all processes' batches, let the epochs
    # drift apart when the batches did not divide evenly).
    scheduler = accelerator.prepare_scheduler(make_scheduler(optimizer.optimizer, t, math.ceil(len(train_dl) / accum),
                                                             ticks_per_step=accelerator.num_processes))
    # one process on a CPU without a loss scaler: the clip rides along in the fused optimizer's read
    fold_clip = (accelerator.device.type == "cpu" and accelerator.num_processes == 1 and accelerator.scaler is None
                 and folds_clip(optimizer.optimizer))
    if t.log_with:
        # a resumed run logs again the steps after its checkpoint: TensorBoard hides what the
        # interrupted run had logged from there on, rather than show those steps twice
        redo = {"tensorboard": {"purge_step": saved.steps_done + 1}} if saved and saved.steps_done is not None else {}
        accelerator.init_trackers(cfg.name, config={k: str(v) for k, v in recipe_dict(t).items()}, init_kwargs=redo)

    # resume, or start afresh
    state = saved or Progress(fingerprint=ckpt.fingerprint, micro_batch_size=micro, made_with=ckpt.made_with,
                              started=clock[0])
    state.started = state.started or clock[0]  # a checkpoint of an older version did not record it
    earlier = state.seconds  # spent on the member before this run, up to its checkpoint

    def timed(progress_now: Progress) -> Progress:  # the wall time so far, saved with every checkpoint
        progress_now.seconds = earlier + time.perf_counter() - clock[1]
        return progress_now
    try:
        best_state, best_logits = ckpt.restore(accelerator, state) if saved else (None, None)
    except Exception as exc:  # noqa: BLE001 - torch, safetensors and accelerate each raise their own
        raise EnsembleError(f"members[{cfg.name}]: its checkpoint '{ckpt.root}' is damaged ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120] if str(exc) else 'unreadable'}); delete that "
                            f"directory to train {cfg.name} from the start") from exc
    # ... and the word-embedding rows no batch has touched yet stay out of the step (after the
    # restore: the restored moments say which rows were touched)
    sparse_rows = EmbeddingRows.attach(accelerator.unwrap_model(model), optimizer.optimizer) if fold_clip and not t.compile else None
    main = accelerator.is_main_process
    total_params, trainable = parameter_count(model)
    # In a log file (no terminal) redraw rarely: one line per 30 s instead of one per batch.
    bar = tqdm(total=len(train_dl) * t.epochs, desc=cfg.name, unit="batch", dynamic_ncols=True,
               initial=(state.epoch - 1) * len(train_dl) + state.batches_done,
               mininterval=0.2 if sys.stderr.isatty() else 30, disable=not (progress and accelerator.is_local_main_process))

    sync_every = _sync_every(accelerator.device)

    def say(line: str) -> None:  # one copy of each line, not one per process (a disabled bar still writes)
        if main:
            bar.write(line)

    say(f"{cfg.name}: {cfg.model or f'{cfg.arch}-{cfg.size} from scratch'}, "
        f"{total_params / 1e6:.1f}M parameters ({trainable / 1e6:.1f}M trainable), "
        f"{len(train_set)} train / {len(valid_set)} valid rows"
        + ("" if not saved else f", resumed at epoch {state.epoch} batch {state.batches_done}" if state.epoch <= t.epochs
           else f", all {t.epochs} epochs done before the interruption: saving it"))
    steps_per_epoch = math.ceil(len(train_dl) / accum)  # this process's optimizer steps (len is per process now)
    step = (state.epoch - 1) * steps_per_epoch + math.ceil(state.batches_done / accum)
    if saved and main:  # the steps after the checkpoint are done again: their old lines go
        ckpt.trim_log(step, state.epoch)
    stop = t.patience is not None and state.stale >= t.patience
    for epoch in range(state.epoch, t.epochs + 1):
        if stop:
            break
        # train one epoch (skipping the batches a resumed run already did)
        model.train()
        done = state.batches_done if epoch == state.epoch else 0
        if done == 0:
            state.loss_sum, state.seen = 0.0, 0
        sampler.start_epoch(epoch)  # the batch order depends on (seed, epoch) only: a resume replays it
        batches = accelerator.skip_first_batches(train_dl, done) if done else train_dl
        start = time.perf_counter()
        seen_at_start = state.seen
        pending: list[tuple] = []  # (batch, rows, loss on the device, lr, step or None) not yet read back
        window = [0.0, 0]  # loss x rows and rows of the optimizer step being accumulated, for its log line
        # rows of each batch's optimizer step (its `accum` batches; the epoch's last step may have
        # fewer): a step's loss is the mean over its rows, as without accumulation
        steps_rows = _step_rows(train_dl, accum) if accum > 1 else None
        lr = scheduler.get_last_lr()[0]

        def settle() -> None:
            """Read the pending losses back in one transfer; check them, count them, log them.

            On a GPU a `.item()` per batch would stall the host until the device finishes, so the
            next batch could not be queued meanwhile: losses are read every `_sync_every` batches,
            and always before a checkpoint is written (a diverged step never reaches one).
            """
            if not pending:
                return
            values = torch.stack([p[2] for p in pending]).float().tolist()
            bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
            rate = 0.0
            steps = []  # [step, lr, loss x rows, rows, samples/s] of each optimizer step completed here
            for (_, rows, _, used_lr, stepped), value in zip(pending, values):
                state.loss_sum += value * rows
                state.seen += rows
                window[0] += value * rows
                window[1] += rows
                rate = (state.seen - seen_at_start) * accelerator.num_processes / max(time.perf_counter() - start, 1e-9)
                if stepped is not None:
                    steps.append([stepped, used_lr, window[0], window[1], rate])
                    window[:] = [0.0, 0]
            # one exchange between processes: whether any loss is non-finite, and each step's loss x
            # rows and rows, so that its logged loss is over all processes' rows (every process
            # completes the same steps here)
            everywhere = _over_processes(accelerator, [float(bad is not None)] + [x for s in steps for x in s[2:4]])
            if everywhere[0]:
                batch_no, value = (pending[bad][0], values[bad]) if bad is not None else (pending[-1][0], "non-finite in another process")
                # nothing of this epoch is saved: the checkpoint of the last good epoch (or step) stays
                kept = (f"the last good checkpoint is kept in '{ckpt.root}'" if (ckpt.root / PROGRESS).is_file()
                        else "no checkpoint was saved before it")
                raise Diverged(f"members[{cfg.name}]: training loss became {value} at epoch {epoch}, batch {batch_no}; "
                               f"lower lr (now {t.lr:g}) or set max_grad_norm (now {t.max_grad_norm:g}); {kept}")
            for i, s in enumerate(steps):
                s[2:4] = everywhere[1 + 2 * i: 3 + 2 * i]
            for stepped, used_lr, loss_rows, rows, step_rate in steps:
                if main:
                    ckpt.log({"event": "step", "epoch": epoch, "step": stepped, "loss": loss_rows / rows, "lr": used_lr,
                              "samples_per_s": step_rate})
                if t.log_with:
                    accelerator.log({"train/loss": loss_rows / rows, "train/lr": used_lr}, step=stepped)
            bar.set_postfix(epoch=f"{epoch}/{t.epochs}", loss=f"{state.loss_sum / state.seen:.4f}", samples_s=f"{rate:.0f}",
                            refresh=False)  # drawn at the bar's own interval, not on every step
            bar.update(len(pending))
            pending.clear()

        for batch in batches:
            rows = batch["input_ids"].shape[0]
            lr = scheduler.get_last_lr()[0]  # the rate this batch's step uses (read before the scheduler moves on)
            with accelerator.accumulate(model):
                targets = batch.pop("teacher", None)
                output = model(**batch)
                loss = output.loss if targets is None else distill_loss(output.logits, batch["labels"], targets, teacher)
                # Accelerate divides each batch's mean loss by `accum`: right when the step's
                # batches are equal, so a batch of a smaller step is weighted by its share of it
                share = 1.0 if steps_rows is None else rows * accum / steps_rows[done]
                accelerator.backward(loss if share == 1.0 else loss * share)
                square = sparse_rows.take() if sparse_rows is not None and accelerator.sync_gradients else 0.0
                if accelerator.sync_gradients and t.max_grad_norm > 0:
                    if fold_clip:
                        clip_into_step(optimizer.optimizer, model.parameters(), t.max_grad_norm, square)
                    else:
                        accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                optimizer.step()
                if sparse_rows is not None and accelerator.sync_gradients:
                    sparse_rows.step()
                scheduler.step()
                optimizer.zero_grad()
            done += 1
            if accelerator.sync_gradients:
                step += 1
            pending.append((done, rows, loss.detach(), lr, step if accelerator.sync_gradients else None))
            save = (accelerator.sync_gradients and t.checkpoint_every and step % t.checkpoint_every == 0
                    and done < len(train_dl))
            if save or len(pending) >= sync_every:
                settle()
            if save:
                if sparse_rows is not None:
                    sparse_rows.settle()  # untouched rows take their owed weight decay before being saved
                state.epoch, state.batches_done, state.steps_done = epoch, done, step
                ckpt.save(accelerator, timed(state), best_state, best_logits)
        settle()
        seconds = time.perf_counter() - start
        # every process saw its own rows: the epoch's train loss is over all of them
        totals = accelerator.reduce(torch.tensor([state.loss_sum, float(state.seen)], device=accelerator.device), "sum")
        train_loss = (totals[0] / totals[1]).item()

        # evaluate on the validation split
        if sparse_rows is not None:
            sparse_rows.settle()
        metrics, valid_logits = validate(model, valid_dl, accelerator, len(labels))
        # "lr": the rate of the epoch's last step
        record = {"epoch": epoch, "train_loss": train_loss, **metrics, "lr": lr,
                  "seconds": seconds, "samples_per_s": (state.seen - seen_at_start) * accelerator.num_processes / seconds,
                  "threads": torch.get_num_threads()}  # CPU threads at the epoch's end (they shape float rounding)
        state.history.append(record)
        say(epoch_line(cfg.name, record))
        if main:
            ckpt.log({"event": "epoch", **record})
        if t.log_with:
            accelerator.log({f"valid/{k}": v for k, v in metrics.items() if k != "confusion"}, step=step)

        # keep the best epoch's weights; stop early when patience runs out
        value = metrics[t.best_metric]
        better = state.best_value is None or (
            value < state.best_value if t.best_metric == "valid_loss" else value > state.best_value)
        if better:
            state.best_value, state.best_epoch, state.stale = value, epoch, 0
            best_state = cpu_state(accelerator.unwrap_model(model))
            best_logits = valid_logits
        else:
            state.stale += 1
            if t.patience is not None and state.stale >= t.patience:
                say(f"{cfg.name}: no better {t.best_metric} for {state.stale} epoch{'s' if state.stale > 1 else ''}; stopping early")
                stop = True
        state.epoch, state.batches_done, state.steps_done = epoch + 1, 0, step
        ckpt.save(accelerator, timed(state), best_state, best_logits)
    bar.close()
    if sparse_rows is not None:
        sparse_rows.detach()
    # the trackers only: `end_training` would also destroy the process group, which the saving
    # below and the members after this one still need under torchrun
    for tracker in accelerator.trackers:
        tracker.finish()

    # save the best epoch as a standard Hugging Face directory, atomically
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(best_state)
    history = state.history
    result = {"member": cfg.name, "best_metric": t.best_metric, "best_epoch": state.best_epoch,
              "best": history[state.best_epoch - 1], "history": history,
              "truncated": {"train": train_set.truncated, "valid": valid_set.truncated, "max_length": t.max_length},
              "processes": accelerator.num_processes,
              # a record of where and with what (compared by nothing: --resume reads recipe.json)
              "environment": asdict(environment(accelerator.device, accelerator.num_processes,
                                                accelerator.mixed_precision, state.started,
                                                timed(state).seconds))}
    accelerator.wait_for_everyone()
    if main:
        _save_member(out_dir, unwrapped, tokenizer, cfg, data, labels, splits, result, best_logits, ckpt.root / LOG,
                     (len(train_set), len(valid_set)), teacher, ckpt.made_with.base)
        ckpt.clear()
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    return result


def _save_member(out_dir: Path, model, tokenizer, cfg: MemberConfig, data: DataConfig, labels: list[str],
                 splits: Splits, result: dict, best_logits: torch.Tensor | None, step_log: Path,
                 sizes: tuple[int, int], teacher: Teacher | None, base: str | None) -> None:
    """Write the trained member as a standard Hugging Face directory, with the recipe that made it
    (and `base`, the `base_fingerprint` it started from), its metrics, validation logits, step log
    and model card, all at once (`files.replace_dir`)."""
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        drop_remote_code(tmp)
        resolved = {"member": recipe_dict(cfg), "data": recipe_dict(data), "labels": labels, "rows": splits.rows,
                    "base_fingerprint": base}
        (tmp / RECIPE_FILE).write_text(json.dumps(resolved, indent=2), encoding="utf-8")
        (tmp / METRICS_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
        if best_logits is not None:
            save_valid_logits(tmp / VALID_LOGITS, best_logits, splits.valid, labels, cfg.train.mixed_precision)
        if step_log.is_file():
            shutil.copy2(step_log, tmp / LOG)
        write_model_card(tmp / "README.md", cfg, labels, result, *sizes, arch=model.config.model_type,
                         distilled=None if teacher is None else (teacher.temperature, teacher.hard_weight,
                                                                  sum(label is None for label in splits.train.labels)))
        replace_dir(tmp, out_dir)
    finally:
        # after a crash, leave no half-written member behind (a loadable one, even)
        shutil.rmtree(tmp, ignore_errors=True)


def member_fingerprint(cfg: MemberConfig, labels: list[str], rows: dict, world: int = 1, taught=None) -> str:
    """What a member's checkpoint must match to be resumed (`MadeWith`): its settings but the
    bookkeeping ones, base model files, labels, data rows (`Splits.rows`), number of processes and teacher.

    Example:
        >>> from ensemble.recipe import TrainConfig
        >>> a, b = (MemberConfig("b", init="scratch", arch="bert", train=TrainConfig(checkpoint_every=n)) for n in (0, 5))
        >>> member_fingerprint(a, ["x", "y"], {}) == member_fingerprint(b, ["x", "y"], {})
        True
    """
    return MadeWith.of(cfg, labels, rows, world, taught).fingerprint()


def epoch_line(name: str, record: dict) -> str:
    """The line printed after each epoch (also by `ensemble.workers`, from a worker's log)."""
    return (f"{name} epoch {record['epoch']}: train_loss {record['train_loss']:.4f}  valid_loss {record['valid_loss']:.4f}  "
            f"accuracy {record['accuracy']:.4f}  macro_f1 {record['macro_f1']:.4f}")


class Diverged(EnsembleError):
    """A member's training loss became NaN or infinite (the recipe's ``on_diverge`` decides what follows)."""


def _step_rows(loader, accum: int) -> list[int]:
    """Per batch of this epoch in this process, the rows of the optimizer step it is part of:
    Accelerate steps after every `accum` batches from the epoch's start and after the last.

    Example:
        >>> _step_rows(type("Loader", (), {"batch_sampler": [[0, 1], [2, 3], [4]]}), 2)
        [4, 4, 1]
    """
    sizes = [len(batch) for batch in loader.batch_sampler]
    rows = []
    for first in range(0, len(sizes), accum):
        step = sizes[first:first + accum]
        rows += [sum(step)] * len(step)
    return rows


def _sync_every(device: torch.device) -> int:
    """Batches between loss read-backs: every batch on CPU (free there), else every 16."""
    return 1 if device.type == "cpu" else 16


def _over_processes(accelerator, values: list[float]) -> list[float]:
    """`values` summed over the processes (one all-reduce; as they are in one process). A
    non-finite loss must stop them all together, or the others hang."""
    if accelerator.num_processes == 1:
        return values
    return accelerator.reduce(torch.tensor(values, dtype=torch.float64, device=accelerator.device), "sum").tolist()


def use_cpu() -> bool:
    """Train on CPU: no GPU here, or ACCELERATE_USE_CPU set (as ``accelerate launch --cpu`` does)."""
    flag = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return flag or not torch.cuda.is_available()


def process_state():
    """Accelerate's process state, initialised so that ``torchrun`` on CPUs runs data-parallel (gloo).

    Accelerate reads ACCELERATE_USE_CPU only when an Accelerator is built; the process state is
    shared and set up once, so it must know about CPU training from the first call.
    """
    from accelerate import PartialState

    return PartialState(cpu=use_cpu())


@torch.inference_mode()
def validate(model, loader, accelerator, n_classes: int) -> tuple[dict, torch.Tensor]:
    """Validation loss, accuracy, macro precision / recall / F1 and the confusion matrix, and the
    float32 logits in the split's row order (batches carry each row's index as "row")."""
    model.eval()
    all_logits, all_labels, all_rows = [], [], []
    for batch in loader:
        labels, rows = batch.pop("labels"), batch.pop("row")
        logits = model(**batch).logits.float()
        logits, labels, rows = accelerator.gather_for_metrics((logits, labels, rows))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
        all_rows.append(rows.cpu())
    logits, labels, rows = torch.cat(all_logits), torch.cat(all_labels), torch.cat(all_rows)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    metrics = classification_metrics(labels.numpy(), logits.argmax(-1).numpy(), n_classes)
    in_order = torch.empty_like(logits)
    in_order[rows] = logits
    return {"valid_loss": loss, **metrics}, in_order
