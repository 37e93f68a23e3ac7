"""Data-parallel training on CPU: `torchrun --nproc_per_node 2 -m ensemble fit` (gloo) against one
process, and members trained concurrently, one per worker (`--concurrent`)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def recipe(tmp_path: Path, members=("bert",), rows: int = 320, extra: str = "") -> Path:
    lines = (ROOT / "recipes" / "demo" / "train.csv").read_text(encoding="utf-8").splitlines()
    # valid_fraction 0.2 of rows + 80: 80 validation rows at 320 (82 at 330), the rest to train
    (tmp_path / "train.csv").write_text("\n".join(lines[:rows + 81]) + "\n", encoding="utf-8")
    path = tmp_path / "r.toml"
    # dropout off and plain shuffling: one process with 16-row batches and two with 8 rows each
    # then train on exactly the same rows per optimizer step.
    path.write_text('[data]\ntrain = "train.csv"\nvalid_fraction = 0.2\n'
                    "[defaults]\nepochs = 2\nbatch_size = 16\nmax_length = 32\nlr = 5e-4\ndropout = 0.0\n"
                    "group_by_length = false\n" + extra
                    + "".join(f'[[members]]\nname = "{a}"\ninit = "scratch"\narch = "{a}"\n' for a in members),
                    encoding="utf-8")
    return path


def run(args: list[str]) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def history(out: Path, name: str = "bert") -> list[dict]:
    return json.loads((out / "members" / name / "metrics.json").read_text())["history"]


def test_two_gloo_processes_match_one_process(tmp_path):
    path = recipe(tmp_path)
    run([sys.executable, "-m", "ensemble", "fit", str(path), "--out", str(tmp_path / "one"), "--quiet"])
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    out = run([torchrun, "--nproc_per_node", "2", "-m", "ensemble", "fit", str(path), "--out", str(tmp_path / "two"),
               "--quiet"])
    assert out.count("bert epoch 1:") == 1 and out.count("bert epoch 2:") == 1  # the main process speaks, once
    # Tolerance: DDP sums the two processes' gradients with an all-reduce, a different float32
    # summation order than one process's backward pass; that moves losses by ~1e-7 per step, far
    # below 1e-4 after 40 steps. Accuracy may flip only on a row whose top two logits tie to 1e-4.
    for one, two in zip(history(tmp_path / "one"), history(tmp_path / "two"), strict=True):
        assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
        assert two["valid_loss"] == pytest.approx(one["valid_loss"], abs=1e-4)
        assert abs(two["accuracy"] - one["accuracy"]) <= 1 / 80
        # every validation row counted exactly once: none duplicated or dropped at the epoch's end
        assert sum(map(sum, two["confusion"])) == sum(map(sum, one["confusion"])) == 80
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["rows"] == 80 and (tmp_path / "two" / "ensemble.json").is_file()


def steps(out: Path, name: str = "bert") -> list[dict]:
    lines = (out / "members" / name / "log.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == "step"]


def test_two_gloo_processes_follow_the_one_process_schedule_and_log_with_a_tracker(tmp_path):
    """328 training rows in batches of 16: 21 steps an epoch, the last of 8 rows; two processes
    each take 21 micro-batches of 8 (Accelerate pads the last). The schedule used to be sized by all
    processes' micro-batches (42 ticks an epoch, 2 per step) against 2 x 21 steps: epochs drifted,
    warmup ran half a step behind. A tracker used to crash every member at its save (the process
    group was destroyed with the trackers), and a step's logged loss was the main process's rows."""
    path = recipe(tmp_path, rows=330, extra="warmup_ratio = 0.1\n")
    run([sys.executable, "-m", "ensemble", "fit", str(path), "--out", str(tmp_path / "one"), "--quiet"])
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    run([torchrun, "--nproc_per_node", "2", "-m", "ensemble", "fit", str(path), "--out", str(tmp_path / "two"), "--quiet",
         "--set", 'defaults.log_with=["tensorboard"]'])
    one, two = steps(tmp_path / "one"), steps(tmp_path / "two")
    assert [s["step"] for s in one] == [s["step"] for s in two] == list(range(1, 43))
    assert [s["lr"] for s in two] == pytest.approx([s["lr"] for s in one], rel=1e-12)
    assert one[4]["lr"] == pytest.approx(5e-4)  # warmup: 4 steps (10% of 42), then the full rate
    # the same rows at the first steps (batches of 16 split in two halves of 8): the same mean loss
    for a, b in zip(one[:20], two[:20]):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4)
    assert (tmp_path / "two" / "members" / "bert" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "two" / "members" / "bert" / "metrics.json").read_text())["processes"] == 2
    assert any((tmp_path / "two" / "logs" / "bert").rglob("events.out.tfevents.*"))


def test_concurrent_members_one_worker_each_match_sequential(tmp_path):
    # one thread per process either way (run() sets OMP_NUM_THREADS=1): the same arithmetic
    path = recipe(tmp_path, members=("bert", "roberta"))
    run([sys.executable, "-m", "ensemble", "fit", str(path), "--out", str(tmp_path / "seq"), "--quiet"])
    out = run([sys.executable, "-m", "ensemble", "fit", str(path), "--out", str(tmp_path / "par"), "--concurrent", "2"])
    assert "training 2 members concurrently in 2 worker processes (1 CPU thread, 1 CPU thread)" in out
    assert out.count("roberta epoch 2:") == 1 and "roberta: trained in" in out  # from the worker's log, once
    for name in ("bert", "roberta"):
        for a, b in zip(history(tmp_path / "seq", name), history(tmp_path / "par", name), strict=True):
            assert a["train_loss"] == b["train_loss"] and a["valid_loss"] == b["valid_loss"]
    assert json.loads((tmp_path / "par" / "report.json").read_text())["ensemble"] == \
        json.loads((tmp_path / "seq" / "report.json").read_text())["ensemble"]


def test_two_processes_killed_then_resumed_equal_an_uninterrupted_run(tmp_path):
    """With dropout and length-grouped batches, each rank's random state matters: every rank must
    save it into the slot that progress.json names (rank 1 used to write into the other one, and a
    run killed after a save into slot 1 resumed with other draws on rank 1)."""
    import signal
    import time

    from safetensors.torch import load_file

    lines = (ROOT / "recipes" / "demo" / "train.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.csv").write_text("\n".join(lines[:401]) + "\n", encoding="utf-8")
    path = tmp_path / "r.toml"
    path.write_text('[data]\ntrain = "train.csv"\nvalid_fraction = 0.2\n[defaults]\nepochs = 3\nbatch_size = 8\n'
                    'max_length = 32\nlr = 5e-4\ncheckpoint_every = 12\n[[members]]\nname = "bert"\ninit = "scratch"\n'
                    'arch = "bert"\n', encoding="utf-8")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    fit = [torchrun, "--nproc_per_node", "2", "-m", "ensemble", "fit", str(path), "--quiet", "--out"]
    run(fit + [str(tmp_path / "whole")])

    # kill the launcher and both ranks at once, right after a save into slot 1 in the second epoch
    proc = subprocess.Popen(fit + [str(tmp_path / "cut")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    progress = tmp_path / "cut" / "members" / ".bert.ckpt" / "progress.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            state = json.loads(progress.read_text())
            if state["epoch"] == 2 and state["slot"] == 1:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = run(fit + [str(tmp_path / "cut"), "--resume"])
    assert "resumed at epoch 2" in out
    for one, two in zip(history(tmp_path / "whole"), history(tmp_path / "cut"), strict=True):
        assert (one["train_loss"], one["valid_loss"]) == (two["train_loss"], two["valid_loss"])
    whole, cut = (load_file(tmp_path / d / "members" / "bert" / "model.safetensors") for d in ("whole", "cut"))
    assert whole.keys() == cut.keys() and all((whole[k] == cut[k]).all() for k in whole)
