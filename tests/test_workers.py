"""Members trained side by side (`ensemble.workers`): how many workers where, which member first,
and what a run does when a worker's member diverges or the run is interrupted."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ensemble.slots as slots
import ensemble.workers as workers
from ensemble.errors import EnsembleError
from ensemble.recipe import MemberConfig, TrainConfig
from ensemble.slots import parse_workers, plan, split_threads

ROOT = Path(__file__).resolve().parents[1]
ROWS = (ROOT / "recipes" / "demo" / "train.csv").read_text(encoding="utf-8").splitlines()[1:241]


def members(n: int, size: str = "tiny") -> list[MemberConfig]:
    return [MemberConfig(f"m{i}", init="scratch", arch="bert", size=size) for i in range(n)]


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A pretend machine: set(threads=, gpus=, memory_gb=) before calling `plan`."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meminfo = tmp_path / "meminfo"
    monkeypatch.setattr(slots, "MEMINFO", str(meminfo))

    def set_(threads: int = 2, gpus: int = 0, memory_gb: float = 64):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        meminfo.write_text(f"MemTotal: 99999999 kB\nMemAvailable: {int(memory_gb * 2**20)} kB\n")
    return set_


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("1", 1), ("4", 4), (" 2 ", 2)])
def test_parse_workers(value, expected):
    assert parse_workers(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_parse_workers_refuses(value):
    with pytest.raises(EnsembleError, match=f"--concurrent: must be 'auto' or a whole number >= 1; got '{value}'"):
        parse_workers(value)


@pytest.mark.parametrize("threads, n_members, workers_arg, expected", [
    (2, 4, "auto", ["1 CPU thread", "1 CPU thread"]),  # this machine: two members at a time
    (8, 3, "auto", ["3 CPU threads", "3 CPU threads", "2 CPU threads"]),  # leftover threads to the first
    (1, 4, "auto", ["this process"]),  # one thread: nothing to share
    (4, 1, "auto", ["this process"]),  # one member
    (2, 4, 1, ["this process"]),
    (2, 4, 3, ["1 CPU thread"] * 3),  # asked for: more workers than threads
    (16, 2, 5, ["8 CPU threads", "8 CPU threads"]),  # never more workers than members
])
def test_cpu_plans(machine, threads, n_members, workers_arg, expected):
    machine(threads=threads)
    slots = plan(workers_arg, members(n_members))
    assert [s.label for s in slots] == expected
    if len(slots) > 1:
        assert [s.env["OMP_NUM_THREADS"] for s in slots] == [x.split()[0] for x in expected]


@pytest.mark.parametrize("threads, workers_n, expected", [(2, 2, [1, 1]), (8, 3, [3, 3, 2]), (2, 1, [2]),
                                                       (1, 2, [1, 1]), (16, 5, [4, 3, 3, 3, 3])])
def test_split_threads(threads, workers_n, expected):
    assert split_threads(threads, workers_n) == expected


def test_auto_keeps_to_the_available_memory(machine):
    # BERT-base-sized members: ~110M parameters x 20 bytes + 1 GiB each; 8 GiB x 0.8 holds two
    machine(threads=8, memory_gb=8)
    assert len(plan("auto", members(4, size="base"))) == 2
    machine(threads=8, memory_gb=2)
    assert [s.label for s in plan("auto", members(4, size="base"))] == ["this process"]
    assert len(plan(4, members(4, size="base"))) == 4  # a number asked for is a number given


def test_gpu_plans(machine, monkeypatch):
    machine(threads=16, gpus=2)
    assert [s.label for s in plan("auto", members(3))] == ["cuda:0", "cuda:1"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in plan(3, members(3))] == ["0", "1", "0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")  # the GPUs this process was given, not 0 and 1
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in plan("auto", members(3))] == ["4", "6"]
    machine(threads=16, gpus=1)
    assert [s.label for s in plan("auto", members(3))] == ["this process"]


def test_inside_a_distributed_launch_members_train_data_parallel(machine, monkeypatch):
    machine(threads=8)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert [s.label for s in plan("auto", members(3))] == ["this process"]
    with pytest.raises(EnsembleError, match=r"--concurrent: 2 workers cannot run inside a distributed launch \(2 processes\)"):
        plan(2, members(3))


def test_largest_member_first():
    small, large = members(1)[0], members(1, size="mini")[0]
    longer = replace(small, name="longer", train=replace(small.train, epochs=small.train.epochs * 20))
    queue = sorted([small, large, longer], key=slots.work, reverse=True)
    # tiny: 2 layers x (4*128^2 + 2*128*512) per epoch; mini: 4 x (4*256^2 + 2*256*1024) = 8x that
    assert [m.name for m in queue] == ["longer", "m0", "m0"] and queue[1].size == "mini"


def test_workers_start_before_the_data_is_read_and_stop_on_its_error(machine, monkeypatch, tmp_path):
    machine(threads=2)
    events = []

    class FakeWorker:
        def __init__(self, slot, position, argv, out, logs, resume):
            events.append(f"start {position}")

        def stop(self):
            events.append("stop")

    def bad_data(data, where=""):
        events.append("read data")
        raise EnsembleError("train: no such file")

    from ensemble.recipe import DataConfig, Recipe, VoteConfig

    monkeypatch.setattr(workers, "_Worker", FakeWorker)
    import ensemble.fit

    monkeypatch.setattr(ensemble.fit, "load_splits", bad_data)  # what checked_inputs reads the data with
    recipe = Recipe(path=tmp_path / "r.toml", data=DataConfig(train="train.csv"), defaults=TrainConfig(),
                    members=tuple(members(2)), vote=VoteConfig())
    with pytest.raises(EnsembleError, match="no such file"):
        workers.fit_concurrent(recipe, ["r.toml"], tmp_path / "run")
    assert events == ["start 0", "start 1", "read data", "stop", "stop"]
    with pytest.raises(EnsembleError, match="no such file"):  # a resumed run plans after reading what is done
        workers.fit_concurrent(recipe, ["r.toml"], tmp_path / "run", resume=True)
    assert events[5:] == ["read data"]


def test_handing_threads_or_members_to_a_dead_worker_leaves_the_report_to_check(tmp_path):
    # the parent may write to a worker that has just died (its member diverged): that must not
    # raise BrokenPipeError (which click turns into a silent exit 1) but let `check` say why
    worker = object.__new__(workers._Worker)
    worker.proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    worker.proc.wait()
    worker.slot = slots.Slot("1 CPU thread", {}, threads=1)
    worker.threads, worker.label, worker.out, worker.position = 1, "1 CPU thread", tmp_path, 0
    worker.output = tmp_path / "worker-0.log"
    worker.output.write_text("error: members[m0]: training loss became nan\n", encoding="utf-8")
    worker.answers, worker.member = workers.Queue(), None
    worker.give(workers._Member(members(1)[0], worker, train_rows=64, progress=False))
    for _ in range(3):  # enough lines to fill the pipe's buffer if nothing reads it
        worker.use_threads(2)
        worker.use_threads(1)
    with pytest.raises(EnsembleError, match=r"members\[m0\]: its worker process .* failed: error: members\[m0\]: "
                                            "training loss became nan"):
        worker.check()
    with pytest.raises(EnsembleError, match="failed on leaving"):
        worker.finish()


@pytest.mark.parametrize("code, lines, expected", [
    (2, "loading\nerror: members[m0].lr: must be > 0; got -1\n", "members[m0].lr: must be > 0; got -1"),
    (2, "Traceback (most recent call last):\n", None),  # not a one-line error: a crash, reported with its log
    (1, "error: something\n", None),  # exit code 1: a bug in the worker, not the user's input
    (-9, "", None),
])
def test_a_workers_own_one_line_error_is_passed_on_as_it_is(tmp_path, code, lines, expected):
    worker = object.__new__(workers._Worker)
    worker.output = tmp_path / "worker-0.log"
    worker.output.write_text(lines, encoding="utf-8")
    assert worker.user_error(code) == expected


# ---------------------------------------------------------------- following a worker's step log

def _epoch(epoch: int, accuracy: float) -> str:
    return json.dumps({"event": "epoch", "epoch": epoch, "train_loss": 0.5, "valid_loss": 0.4,
                       "accuracy": accuracy, "macro_f1": accuracy}) + "\n"


def test_following_a_log_that_the_worker_replaced_reads_the_new_one_from_its_start(tmp_path, capsys):
    from types import SimpleNamespace

    from ensemble.checkpoint import LOG, checkpoint_dir

    worker = SimpleNamespace(out=tmp_path, label="1 CPU thread", position=0)
    member = workers._Member(members(1)[0], worker, train_rows=64, progress=False)
    log = checkpoint_dir(tmp_path / "members" / "m0") / LOG
    log.parent.mkdir(parents=True)
    log.write_text(_epoch(1, 0.11) + _epoch(2, 0.22) + _epoch(3, 0.33), encoding="utf-8")
    member.follow()
    log.unlink()  # a fresh start clears the checkpoint; the new log is shorter than what was read
    log.write_text(_epoch(1, 0.44), encoding="utf-8")
    member.follow()
    with log.open("a", encoding="utf-8") as f:
        f.write(_epoch(2, 0.55) + '{"event": "ep')  # a line still being written waits
    member.follow()
    printed = capsys.readouterr().out
    assert re.findall(r"accuracy (\S+)", printed) == ["0.1100", "0.2200", "0.3300", "0.4400", "0.5500"]
    # the final copy in the member directory begins with what was read: nothing is printed twice
    (tmp_path / "members" / "m0").mkdir()
    (tmp_path / "members" / "m0" / LOG).write_text(log.read_text().rsplit("\n", 1)[0] + "\n" + _epoch(3, 0.66))
    member.follow(tmp_path / "members" / "m0" / LOG)
    assert re.findall(r"accuracy (\S+)", capsys.readouterr().out) == ["0.6600"]


# ---------------------------------------------------------------- real worker processes

def write_recipe(tmp: Path, extra: str = "", broken: bool = False) -> Path:
    """bert and roberta (tiny, scratch); with `broken`, a third member whose weights hold a NaN."""
    (tmp / "train.csv").write_text("text,label\n" + "\n".join(ROWS) + "\n", encoding="utf-8")
    body = "".join(f'[[members]]\nname = "{a}"\ninit = "scratch"\narch = "{a}"\n' for a in ("bert", "roberta"))
    if broken:
        from ensemble.labels import sorted_labels
        from ensemble.members import build_member

        labels = sorted_labels([row.rsplit(",", 1)[1] for row in ROWS])
        model, tokenizer = build_member(MemberConfig("x", init="scratch", arch="bert", size="tiny",
                                                     train=TrainConfig()), labels, [r.rsplit(",", 1)[0] for r in ROWS])
        from ensemble.integrity import PROBE

        # a corrupt checkpoint that passes the load-time check (`integrity.probe`, whose tokens
        # are kept finite) yet gives NaN on every training batch: NaN embeddings for other tokens
        kept = {i for text in (PROBE, "a") for i in tokenizer(text)["input_ids"]} | set(tokenizer.all_special_ids)
        embeddings = model.bert.embeddings.word_embeddings.weight
        with torch.no_grad():
            embeddings[[i for i in range(embeddings.shape[0]) if i not in kept]] = float("nan")
        model.save_pretrained(tmp / "nan-model")
        tokenizer.save_pretrained(tmp / "nan-model")
        body += f'[[members]]\nname = "broken"\nmodel = "{tmp / "nan-model"}"\n'
    (tmp / "r.toml").write_text('[data]\ntrain = "train.csv"\nvalid_fraction = 0.25\n[defaults]\nepochs = 2\n'
                                f'max_length = 32\nlr = 5e-4\n{extra}\n{body}', encoding="utf-8")
    return tmp / "r.toml"


def ensemble_fit(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "ensemble", "fit", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_a_member_diverging_in_a_worker_is_left_out_of_the_vote(tmp_path):
    recipe = write_recipe(tmp_path, extra='on_diverge = "skip"', broken=True)
    done = ensemble_fit(str(recipe), "--out", str(tmp_path / "run"), "--concurrent", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "broken: members[broken]: training loss became nan at epoch 1, batch 1" in done.stderr
    assert "left out of the vote" in done.stderr
    assert list(json.loads((tmp_path / "run" / "ensemble.json").read_text())["members"]) == ["bert", "roberta"]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert list(report["data"]["failed_members"]) == ["broken"]
    assert not list((tmp_path / "run" / "members").glob(".*.diverged"))  # read and removed


@pytest.mark.slow
def test_a_member_diverging_in_a_worker_stops_the_run_with_one_line(tmp_path):
    done = ensemble_fit(str(write_recipe(tmp_path, broken=True)), "--out", str(tmp_path / "run"), "--concurrent", "2",
                        "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    # the worker's own one-line error, as it is (not wrapped in "its worker process failed: error: ...")
    assert re.match(r"error: members\[broken\]: training loss became nan at epoch 1, batch 1; lower lr", last), done.stderr
    assert last.count("error:") == 1
    assert not (tmp_path / "run" / "ensemble.json").exists()


def _workers_of(run: Path) -> list[int]:
    """Pids of live worker processes writing into `run`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--serve" in cmd and str(run).encode() in cmd:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def _resumed_epochs(stdout: str, name: str, epochs: int) -> bool:
    """Whether `stdout` says where `name` resumed and then prints exactly the epochs after that."""
    worker = re.search(rf"^{name}: resuming from its checkpoint \((\d+) of {epochs} epochs done", stdout, flags=re.M)
    alone = re.search(rf"^{name}: .*, resumed at epoch (\d+) batch", stdout, flags=re.M)
    if not (worker or alone):
        return False
    first = int(worker[1]) + 1 if worker else int(alone[1])
    printed = [int(e) for e in re.findall(rf"^{name} epoch (\d+):", stdout, flags=re.M)]
    return printed == list(range(first, epochs + 1))


def test_ctrl_c_stops_the_workers_and_resume_finishes_the_run(tmp_path):
    recipe = write_recipe(tmp_path, extra="epochs = 4").read_text().replace("epochs = 2\n", "")
    (tmp_path / "r.toml").write_text(recipe, encoding="utf-8")
    run = tmp_path / "run"
    args = [sys.executable, "-m", "ensemble", "fit", str(tmp_path / "r.toml"), "--out", str(run), "--concurrent", "2",
            "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    progress = run / "members" / ".bert.ckpt" / "progress.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not progress.is_file():
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    assert len(_workers_of(run)) == 2
    proc.send_signal(signal.SIGINT)  # to the parent only, as `kill -INT`: it must stop its workers itself
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("interrupted (training state is saved")
    assert _workers_of(run) == []
    assert not (run / "ensemble.json").exists()

    resumed = ensemble_fit(str(tmp_path / "r.toml"), "--out", str(run), "--concurrent", "2", "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    # it says where bert resumes and prints only the epochs trained now, not the step log's old ones
    # (in a worker; or here, when roberta finished before the interruption and bert trains alone)
    assert _resumed_epochs(resumed.stdout, "bert", 4), resumed.stdout
    for name in ("bert", "roberta"):
        history = json.loads((run / "members" / name / "metrics.json").read_text())["history"]
        assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert (run / "ensemble.json").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_sigkill_of_the_run_stops_its_workers_and_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    # when one member finishes, the other's worker takes its threads, at a moment the kill shifts:
    # bit-identical weights need that hand-over off (the threads stay as they were checkpointed)
    monkeypatch.setenv(workers.HANDOVER, "0")
    recipe = write_recipe(tmp_path, extra="epochs = 12").read_text().replace("epochs = 2\n", "")
    (tmp_path / "r.toml").write_text(recipe, encoding="utf-8")
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert ensemble_fit(str(tmp_path / "r.toml"), "--out", str(whole), "--concurrent", "2", "--quiet").returncode == 0

    args = [sys.executable, "-m", "ensemble", "fit", str(tmp_path / "r.toml"), "--out", str(run), "--concurrent", "2",
            "--quiet"]
    scratch = tmp_path / "tmp"  # where the run keeps its workers' logs (tempfile follows TMPDIR)
    scratch.mkdir()
    proc = subprocess.Popen(args, env={**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(scratch)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = run / "members" / ".bert.ckpt" / "progress.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not progress.is_file():
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.kill()  # no handler runs: the workers must notice their parent is gone
    proc.wait()
    deadline = time.monotonic() + 30
    while _workers_of(run) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _workers_of(run) == [], "orphaned workers kept training into the run directory"
    assert list(scratch.glob("ensemble-workers-*")) == [], "the killed run's worker logs were left behind"
    assert not (run / "members" / "bert" / "metrics.json").exists()  # bert was cut short (~0.5 s an epoch)

    resumed = ensemble_fit(str(tmp_path / "r.toml"), "--out", str(run), "--concurrent", "2", "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    # it says where bert resumes and prints only the epochs trained now, not the step log's old ones
    # (in a worker; or here, when roberta finished before the interruption and bert trains alone)
    assert _resumed_epochs(resumed.stdout, "bert", 12), resumed.stdout
    for name in ("bert", "roberta"):
        a, b = (json.loads((d / "members" / name / "metrics.json").read_text()) for d in (whole, run))
        assert [h["valid_loss"] for h in a["history"]] == [h["valid_loss"] for h in b["history"]]
        assert (whole / "members" / name / "model.safetensors").read_bytes() == \
            (run / "members" / name / "model.safetensors").read_bytes()
        # the best epoch's validation logits (what the vote uses) survive the kill too
        la, lb = (load_file(d / "members" / name / "valid_logits.safetensors") for d in (whole, run))
        assert (la["logits"] == lb["logits"]).all(), name
    assert json.loads((whole / "report.json").read_text())["ensemble"] == json.loads((run / "report.json").read_text())["ensemble"]


@pytest.mark.slow
def test_overwriting_an_interrupted_run_follows_only_the_new_step_logs(tmp_path):
    # an earlier run killed mid-training left bert's checkpoint and step log behind
    stale = tmp_path / "run" / "members" / ".bert.ckpt" / "log.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text("".join(_epoch(e, 0.1234) for e in range(1, 8)) + '{"event": "st', encoding="utf-8")
    done = ensemble_fit(str(write_recipe(tmp_path)), "--out", str(tmp_path / "run"), "--overwrite", "--concurrent", "2",
                        "--quiet")
    assert done.returncode == 0, done.stderr
    assert "0.1234" not in done.stdout and "epoch 7" not in done.stdout
    for name in ("bert", "roberta"):
        assert [line.split(":")[0] for line in done.stdout.splitlines() if line.startswith(f"{name} epoch")] == \
            [f"{name} epoch 1", f"{name} epoch 2"], done.stdout


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_data_error_after_the_workers_started_stops_them(tmp_path):
    # workers start before the data is read (their imports overlap it): an error there must stop them
    recipe = write_recipe(tmp_path)
    (tmp_path / "train.csv").write_text("text,stars\na film,5\n", encoding="utf-8")
    done = ensemble_fit(str(recipe), "--out", str(tmp_path / "run"), "--concurrent", "2")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: "), done.stderr
    assert _workers_of(tmp_path / "run") == []


@pytest.mark.slow
def test_when_the_queue_is_empty_idle_workers_hand_their_threads_to_the_busy_one(tmp_path):
    # bert (mini, 12 epochs) has ~50x the work of the others: it goes first (largest first) and is
    # still training when roberta and electra (tiny, 1 epoch) are done; the worker that trained
    # them leaves, and bert goes on with both threads
    (tmp_path / "train.csv").write_text("text,label\n" + "\n".join(ROWS) + "\n", encoding="utf-8")
    members = "".join(f'[[members]]\nname = "{a}"\ninit = "scratch"\narch = "{a}"\n' for a in ("roberta", "electra"))
    (tmp_path / "r.toml").write_text('[data]\ntrain = "train.csv"\nvalid_fraction = 0.25\n[defaults]\nepochs = 1\n'
                                     'max_length = 32\n' + members + '[[members]]\nname = "bert"\ninit = "scratch"\n'
                                     'arch = "bert"\nsize = "mini"\nepochs = 12\n', encoding="utf-8")
    done = ensemble_fit(str(tmp_path / "r.toml"), "--out", str(tmp_path / "run"), "--concurrent", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "bert: the other workers are done; it goes on with 2 CPU threads" in done.stdout, done.stdout
    history = json.loads((tmp_path / "run" / "members" / "bert" / "metrics.json").read_text())["history"]
    threads = [h["threads"] for h in history]
    assert threads[0] == 1 and threads[-1] == 2, (threads, done.stdout)  # the worker switched between two steps
    assert list(json.loads((tmp_path / "run" / "ensemble.json").read_text())["members"]) == ["roberta", "electra", "bert"]


def test_the_parent_resumes_a_checkpoint_of_other_bookkeeping_and_says_what_else_changed(tmp_path, capsys):
    """The parent decides which members its workers continue (their own lines go to their logs):
    checkpoint_every does not count; a learning setting does, and is named."""
    from dataclasses import asdict

    from ensemble.checkpoint import PROGRESS, MadeWith, Progress, checkpoint_dir
    from ensemble.files import write_json

    rows, labels = {"train": "t", "valid": "v"}, ["neg", "pos"]
    saved = MemberConfig("m", init="scratch", arch="bert", train=TrainConfig(lr=5e-4, checkpoint_every=4))
    made = MadeWith.of(saved, labels, rows)
    root = checkpoint_dir(tmp_path / "members" / "m")
    root.mkdir(parents=True)
    write_json(root / PROGRESS, asdict(Progress(made.fingerprint(), 8, epoch=2, batches_done=8, made_with=made)))
    assert workers._resumable(tmp_path / "members" / "m", replace(saved, train=replace(saved.train, checkpoint_every=5)),
                              labels, rows)
    assert capsys.readouterr().out == ""
    assert not workers._resumable(tmp_path / "members" / "m", replace(saved, train=replace(saved.train, lr=3e-4)),
                                  labels, rows)
    assert capsys.readouterr().out == ("m: its checkpoint (epoch 2, batch 8) was made with other settings "
                                       "(train.lr: 0.0005 -> 0.0003); training it from the start\n")
