"""Members trained side by side: one worker process per GPU, or per share of the CPU cores.

One member's training step uses several CPU cores poorly: its matmuls are small and its layer
norms, dropout and optimizer passes hardly speed up with more threads (a MiniLM step runs 1.5x
faster on two threads than on one). Members are independent, so when a recipe has several,
``ensemble fit`` trains them concurrently by default: each worker process gets its own share of
the cores (or one GPU) and takes the next member from a queue, largest first; the vote follows
once all are done. A worker is ``ensemble fit RECIPE --serve``: it trains each member named on its
stdin (as ``--only NAME`` would), and the member's step log (``log.jsonl``) feeds this process's
progress bar for it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from queue import Queue

from tqdm.auto import tqdm

from .checkpoint import LOG, Checkpoint, MadeWith, checkpoint_dir, matches, read_progress
from .errors import EnsembleError
from .fit import (OutLock, check_out, checked_inputs, data_warnings, diverged_file, finished, fit, keep_trained,
                  prepare_out, retrain_why, vote_and_report)
from .devices import bf16_tip
from .members import saved_metrics
from .recipe import MemberConfig, Recipe
from .slots import Slot, plan, split_threads, threads_label, work
from .train import checkpoint_mismatch, epoch_line

PARENT = "ENSEMBLE_PARENT_PID"  # a worker stops when this process, its parent, is gone
LOGS = "ENSEMBLE_WORKER_LOGS"  # ... and removes the parent's log directory, which nobody will read
# "0": a worker keeps its threads when others finish. The hand-over's timing changes float sums,
# so a killed and resumed run matches an uninterrupted one bit for bit only without it.
HANDOVER = "ENSEMBLE_THREAD_HANDOVER"


def fit_concurrent(recipe: Recipe, argv: list[str], out: Path, workers: str | int = "auto", overwrite: bool = False,
                   resume: bool = False, progress: bool = True) -> dict:
    """Train the members concurrently on the slots of `plan(workers)`, then vote and report like `fit`.

    `argv` is what a worker needs to rebuild the same recipe: the recipe path and its --set /
    --scratch options. With one slot (one member, one CPU thread, one GPU, a distributed launch)
    this is `fit`, in this process.

    Example:
        >>> fit_concurrent(recipe, ["recipes/project1.toml"], Path("runs/p1"), workers="auto")  # doctest: +SKIP
    """
    lock = OutLock()  # taken before the run directory changes; the workers train under it
    try:
        return _fit_concurrent(recipe, argv, Path(out), workers, overwrite, resume, progress, lock)
    finally:
        lock.release()


def _fit_concurrent(recipe: Recipe, argv: list[str], out: Path, workers: str | int, overwrite: bool, resume: bool,
                    progress: bool, lock: OutLock) -> dict:
    slots = plan(workers, list(recipe.members))
    if len(slots) == 1:
        return fit(recipe, out, overwrite=overwrite, resume=resume, progress=progress)
    note = check_out(out, overwrite, resume)
    # A fresh run trains every member: start the workers now, so that their imports (~2.5 s)
    # overlap this process's data loading and checks. They stay idle until given a member.
    logs = Path(tempfile.mkdtemp(prefix="ensemble-workers-"))
    started = [] if resume else [_Worker(slot, k, argv, out, logs, resume) for k, slot in enumerate(slots)]
    try:
        splits, test, labels = checked_inputs(recipe, recipe.members)  # a data error is reported once, here
        rows = splits.rows if resume else None
        kept = [m for m in recipe.members if resume and finished(out / "members" / m.name, m, labels, rows)]
        queue = [m for m in recipe.members if m not in kept]
        if resume:
            slots = plan(workers, queue) if queue else []
        if len(slots) == 1:  # one member left to train (a resumed run): all the threads for it, here
            shutil.rmtree(logs, ignore_errors=True)
            return fit(recipe, out, overwrite=overwrite, resume=resume, progress=progress)
        for warning in data_warnings(recipe.data, splits, test):
            print(warning)
        tip = bf16_tip(recipe.members) if progress else None
        for line in (note, tip):
            if line:
                print(line)
        lock.acquire(out)
        prepare_out(out, recipe, resume=resume)
    except BaseException:
        for w in started:
            w.stop()
        shutil.rmtree(logs, ignore_errors=True)
        raise
    for m in kept:
        keep_trained(out / "members" / m.name, m.name)
    resuming = set()  # members that continue from a checkpoint (not trained again from the start)
    for m in queue:
        if resume and not retrain_why(out / "members" / m.name, m, labels, rows) and _resumable(
                out / "members" / m.name, m, labels, rows):
            resuming.add(m.name)
    for m in queue:
        diverged_file(out, m.name).unlink(missing_ok=True)
        if m.name not in resuming:  # a checkpoint not continued: its step log must not feed this run's progress
            shutil.rmtree(checkpoint_dir(out / "members" / m.name), ignore_errors=True)
    if queue:
        print(f"training {len(queue)} members concurrently in {len(slots)} worker processes "
              f"({', '.join(s.label for s in slots)}); --concurrent 1 trains them one at a time")
    pool = started or [_Worker(slot, k, argv, out, logs, resume) for k, slot in enumerate(slots)]
    failed = _run_queue(queue, pool, out, logs, len(splits.train), progress, resuming)
    return vote_and_report(recipe, out, splits, test, labels, failed, progress)


def _resumable(member_dir: Path, m: MemberConfig, labels: list[str], rows: dict | None) -> bool:
    """Whether the member's checkpoint is one its worker (one process, no teacher) will continue;
    when there is one it will not, say why here (the worker's own line goes to its log)."""
    progress = read_progress(checkpoint_dir(member_dir))
    if progress is None or rows is None:
        return False
    made = MadeWith.of(m, labels, rows)
    if matches(progress, made.fingerprint(), MadeWith.legacy(m, labels, rows)):
        return True
    print(checkpoint_mismatch(m.name, progress, made))
    return False


def _run_queue(queue: list[MemberConfig], workers: list[_Worker], out: Path, logs: Path, train_rows: int,
               progress: bool, resuming: set[str] = frozenset()) -> dict[str, str]:
    """Train `queue` on `workers`, largest member first; returns the members that diverged, with why."""
    pending = sorted(queue, key=work, reverse=True)  # stable: equal members keep the recipe's order
    slots = [w.slot for w in workers]
    failed: dict[str, str] = {}
    try:
        threads = sum(slot.threads for slot in slots)
        while pending or any(w.member is not None for w in workers):
            for w in workers:
                if w.member is None and pending:
                    cfg = pending.pop(0)
                    w.give(_Member(cfg, w, train_rows, progress, resumed=cfg.name in resuming))
            if not pending and any(w.member is None for w in workers):
                # nothing left to hand out: idle workers leave, and on a CPU their threads go to
                # the members still training (one big member must not finish on one core)
                for w in [w for w in workers if w.member is None]:
                    w.finish()
                    workers.remove(w)
                if threads and workers and os.environ.get(HANDOVER, "1") != "0":
                    for w, n in zip(workers, split_threads(threads, len(workers))):
                        w.use_threads(n)
            time.sleep(0.2)
            for w in workers:
                name = w.check()
                if name and diverged_file(out, name).is_file():
                    failed[name] = diverged_file(out, name).read_text(encoding="utf-8")
                    diverged_file(out, name).unlink()
                    tqdm.write(f"{name}: {failed[name]}; left out of the vote (on_diverge = \"skip\")", file=sys.stderr)
        for w in workers:
            w.finish()
    except BaseException as exc:
        for w in workers:  # the checkpoints stay: --resume continues the interrupted members
            w.stop()
        if isinstance(exc, _UserError):  # the message says it all; the logs are kept for crashes only
            shutil.rmtree(logs, ignore_errors=True)
        raise
    shutil.rmtree(logs, ignore_errors=True)
    return failed


class _UserError(EnsembleError):
    """A worker stopped on a mistake in the user's input: its one-line error, passed on as it is."""


def serve(recipe: Recipe, out: Path, resume: bool) -> None:
    """A worker's side: train each member named on stdin (as ``--only NAME``), answer ``done NAME`` on stdout.

    Everything else the worker prints goes to stderr, which the parent keeps in a log file. A
    worker whose parent dies (even by SIGKILL) stops within a second.
    """
    from .cli import stop_when_orphaned

    def clear_logs() -> None:  # the parent that would have removed them is gone
        logs = os.environ.get(LOGS, "")
        if Path(logs).name.startswith("ensemble-workers-"):  # only the directory the parent made
            shutil.rmtree(logs, ignore_errors=True)

    stop_when_orphaned(parent=int(os.environ.get(PARENT, os.getppid())), cleanup=clear_logs)
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)
    import torch

    names: Queue[str | None] = Queue()
    wanted = [torch.get_num_threads()]
    retune = getattr(signal, "SIGUSR1", None)
    if retune is not None:  # torch's thread count is the main thread's own: set it there, between two ops
        signal.signal(retune, lambda *_: torch.set_num_threads(wanted[0]))

    def read() -> None:  # names to train, and "threads N" when the parent hands over more cores
        for line in sys.stdin:
            word, _, count = line.strip().partition(" ")
            if word == "threads" and retune is not None:
                wanted[0] = int(count)
                os.kill(os.getpid(), retune)
            elif word and word != "threads":
                names.put(word)
        names.put(None)

    threading.Thread(target=read, daemon=True).start()
    while (name := names.get()) is not None:
        fit(recipe, out, overwrite=not resume, resume=resume, progress=False, only=[name], claim=False)
        answers.write(f"done {name}\n")


class _Worker:
    """A worker process on one slot, training the members it is given one at a time (`serve`)."""

    def __init__(self, slot: Slot, position: int, argv: list[str], out: Path, logs: Path, resume: bool):
        self.slot, self.position, self.out = slot, position, out
        self.threads, self.label = slot.threads, slot.label
        self.output = logs / f"worker-{position}.log"
        command = [sys.executable, "-m", "ensemble", "fit", *argv, "--out", str(out), "--serve", "--quiet",
                   "--resume" if resume else "--overwrite"]
        with open(self.output, "wb") as sink:
            self.proc = subprocess.Popen(command, env={**os.environ, **slot.env, PARENT: str(os.getpid()), LOGS: str(logs)},
                                         stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=sink, text=True)
        self.answers: Queue[str] = Queue()
        threading.Thread(target=lambda: [self.answers.put(x.strip()) for x in self.proc.stdout], daemon=True).start()
        self.member: _Member | None = None

    def give(self, member: _Member) -> None:
        self.member = member
        self._tell(member.cfg.name)

    def use_threads(self, n: int) -> None:
        """Train on `n` CPU threads from now on (the worker sets them between two steps)."""
        if n == self.threads or self.member is None:
            return
        self.threads, self.label = n, threads_label(n)
        self._tell(f"threads {n}")
        self.member.bar.set_description(f"{self.member.cfg.name} ({self.label})", refresh=False)
        tqdm.write(f"{self.member.cfg.name}: the other workers are done; it goes on with {self.label}")

    def _tell(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # the worker has died: `check` reports why
            pass

    def check(self) -> str | None:
        """Follow the member in training; its name once it is done. A dead worker raises."""
        if self.member is None:
            return None
        self.member.follow()
        if not self.answers.empty() and self.answers.get() == f"done {self.member.cfg.name}":
            member, self.member = self.member, None
            member.close()
            return member.cfg.name
        code = self.proc.poll()
        if code in (130, -signal.SIGINT):  # Ctrl-C reached the worker first: the run was interrupted
            raise KeyboardInterrupt
        if code is not None:  # a worker only leaves when its stdin closes: this one crashed
            mistake = self.user_error(code)
            raise _UserError(mistake) if mistake else EnsembleError(self.failure(code))
        return None

    def _lines(self) -> list[str]:
        return [x for x in self.output.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]

    def user_error(self, code: int) -> str | None:
        """The worker's own one-line error when it stopped on a user mistake (exit code 2), else None."""
        lines = self._lines()
        if code == 2 and lines and lines[-1].startswith("error: "):
            return lines[-1][len("error: "):]
        return None

    def failure(self, code: int) -> str:
        lines = self._lines()
        why = (f"killed by {signal.Signals(-code).name}" + (" (out of memory?)" if code == -signal.SIGKILL else "")
               if code < 0 else lines[-1] if lines else f"exit code {code}")
        return (f"members[{self.member.cfg.name}]: its worker process ({self.label}) failed: {why} "
                f"(all its output: {self.output})")

    def finish(self) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:  # it died after its last member: the exit code below says so
            pass
        if self.proc.wait():
            raise EnsembleError(f"a worker process ({self.slot.label}) failed on leaving (its output: {self.output})")

    def stop(self) -> None:
        if self.member is not None:
            self.member.bar.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class _Member:
    """A member in training on a worker, and its progress bar, fed by the member's step log."""

    def __init__(self, cfg: MemberConfig, worker: _Worker, train_rows: int, progress: bool, resumed: bool = False):
        self.cfg, self.worker = cfg, worker
        self.member_dir = worker.out / "members" / cfg.name
        t = cfg.train
        steps = math.ceil(math.ceil(train_rows / t.micro_batch_size) / t.grad_accum) * t.epochs
        self.bar = tqdm(total=steps, desc=f"{cfg.name} ({worker.label})", unit="step", position=worker.position,
                        leave=False, dynamic_ncols=True, mininterval=0.5,
                        disable=not (progress and sys.stderr.isatty()))  # in a log file the epoch lines suffice
        self.offset, self.loss_sum, self.losses, self.epoch = 0, 0.0, 0, 0
        self.file: tuple[int, int] | None = None  # (device, inode) of the log being read
        self.started = time.perf_counter()
        if resumed:
            self._skip_checkpointed()

    def _skip_checkpointed(self) -> None:
        """A member resumed from its checkpoint: its step log already holds the epochs before the
        interruption, printed by the interrupted run; say where it resumes instead of replaying them.
        (The worker has not started on it yet: every line there is old.)"""
        log = checkpoint_dir(self.member_dir) / LOG
        progress = read_progress(checkpoint_dir(self.member_dir))
        if progress is not None and progress.steps_done is not None:  # the lines after the checkpoint go (`trim_log`)
            Checkpoint(checkpoint_dir(self.member_dir), progress.fingerprint).trim_log(progress.steps_done, progress.epoch)
        try:
            with open(log, "rb") as f:
                stat, data = os.fstat(f.fileno()), f.read()
        except OSError:
            return
        self.file, self.offset = (stat.st_dev, stat.st_ino), data.rfind(b"\n") + 1
        if progress is None:
            return  # no checkpoint was saved: it starts again from its first step
        done = len(progress.history)  # the epochs the checkpoint holds (the log may run past it)
        self.epoch = done
        tqdm.write(f"{self.cfg.name}: resuming from its checkpoint ({done} of {self.cfg.train.epochs} epochs done "
                   "before the interruption)")

    def follow(self, log: Path | None = None) -> None:
        """Read the step log's new lines: steps move the bar, epochs print their line.

        `log`: the final copy of the step log in the member directory, which begins with every
        line already read. Without it, the checkpoint's log, which the worker may replace (a
        fresh start clears the checkpoint): a new file is read from its start.
        """
        try:
            with open(log or checkpoint_dir(self.member_dir) / LOG, "rb") as f:
                stat = os.fstat(f.fileno())
                if log is None and ((stat.st_dev, stat.st_ino) != self.file or stat.st_size < self.offset):
                    self.file, self.offset = (stat.st_dev, stat.st_ino), 0
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        done = data.rfind(b"\n") + 1  # a line still being written waits for the next look
        self.offset += done
        for line in data[:done].splitlines():
            record = json.loads(line)
            if record.get("event") == "step":
                if record["epoch"] != self.epoch:
                    self.epoch, self.loss_sum, self.losses = record["epoch"], 0.0, 0
                self.loss_sum, self.losses = self.loss_sum + record["loss"], self.losses + 1
                self.bar.update(record["step"] - self.bar.n)
                self.bar.set_postfix(epoch=f"{self.epoch}/{self.cfg.train.epochs}",
                                     loss=f"{self.loss_sum / self.losses:.4f}",
                                     samples_s=f"{record['samples_per_s']:.0f}", refresh=False)
            elif record.get("event") == "epoch":
                self.bar.write(epoch_line(self.cfg.name, record))

    def close(self) -> None:
        if (self.member_dir / LOG).is_file():
            self.follow(self.member_dir / LOG)  # the last lines, written just before the checkpoint went
        self.bar.close()
        best = saved_metrics(self.member_dir)
        if "best_epoch" in best:
            tqdm.write(f"{self.cfg.name}: trained in {time.perf_counter() - self.started:.0f} s on "
                       f"{self.worker.label}; best epoch {best['best_epoch']} "
                       f"({best['best_metric']} {best['best'][best['best_metric']]:.4f})")
