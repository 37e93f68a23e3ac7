"""Checkpoint and resume with a real kill: SIGKILL a fit mid-member, --resume it, and get the
same metrics and bit-identical weights as a run that was never interrupted (CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def recipe(tmp_path: Path) -> Path:
    lines = (ROOT / "recipes" / "demo" / "train.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.csv").write_text("\n".join(lines[:401]) + "\n", encoding="utf-8")
    path = tmp_path / "r.toml"
    path.write_text(
        '[data]\ntrain = "train.csv"\nvalid_fraction = 0.2\n'
        "[defaults]\nepochs = 3\nbatch_size = 16\nmax_length = 32\nlr = 5e-4\ncheckpoint_every = 4\n"
        "weight_decay = 0.01\n"  # the word-embedding rows owe their decay across a checkpoint
        + "".join(f'[[members]]\nname = "{a}"\ninit = "scratch"\narch = "{a}"\nseed = {i}\n'
                  for i, a in enumerate(("bert", "roberta"))), encoding="utf-8")
    return path


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # same threads: same float order
    return subprocess.Popen([sys.executable, "-m", "ensemble", *args, "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    path = recipe(tmp_path)
    finish(cli("fit", str(path), "--out", str(tmp_path / "whole")))

    # kill -9 once the second member has a mid-epoch checkpoint in its second epoch
    proc = cli("fit", str(path), "--out", str(tmp_path / "cut"))
    progress = tmp_path / "cut" / "members" / ".roberta.ckpt" / "progress.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            state = json.loads(progress.read_text())
            if state["epoch"] == 2 and state["batches_done"] > 0:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "ensemble.json").exists()  # nothing looks complete
    assert not (tmp_path / "cut" / "members" / "roberta").exists()

    out = finish(cli("fit", str(path), "--out", str(tmp_path / "cut"), "--resume"))
    assert "bert: already trained with these settings; kept" in out
    assert "resumed at epoch 2" in out
    for name in ("bert", "roberta"):
        whole, cut = (json.loads((tmp_path / d / "members" / name / "metrics.json").read_text()) for d in ("whole", "cut"))
        assert whole["best_epoch"] == cut["best_epoch"]
        for a, b in zip(whole["history"], cut["history"], strict=True):
            for key in ("train_loss", "valid_loss", "accuracy", "macro_f1", "lr", "confusion"):
                assert a[key] == b[key], (name, key)
        wa, wb = (load_file(tmp_path / d / "members" / name / "model.safetensors") for d in ("whole", "cut"))
        assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa), name
        # the best epoch's validation logits (what the vote uses) survive the kill too
        la, lb = (load_file(tmp_path / d / "members" / name / "valid_logits.safetensors") for d in ("whole", "cut"))
        assert (la["logits"] == lb["logits"]).all(), name
    assert json.loads((tmp_path / "whole" / "report.json").read_text())["ensemble"] == \
        json.loads((tmp_path / "cut" / "report.json").read_text())["ensemble"]
    assert not (tmp_path / "cut" / "members" / ".roberta.ckpt").exists()  # cleaned up once finished
    steps = [json.loads(line) for line in (tmp_path / "cut" / "members" / "roberta" / "log.jsonl").read_text().splitlines()]
    assert {s["event"] for s in steps} == {"step", "epoch"}
    # the steps redone after the checkpoint are logged once: the log reads like the uninterrupted one's
    whole = [json.loads(line) for line in (tmp_path / "whole" / "members" / "roberta" / "log.jsonl").read_text().splitlines()]
    assert [(s["event"], s["epoch"], s.get("step")) for s in steps] == [(s["event"], s["epoch"], s.get("step")) for s in whole]


def test_resume_keeps_a_member_the_recipe_dropped_and_retrains_one_whose_data_changed(tmp_path, cli):
    rows = (ROOT / "recipes" / "demo" / "train.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.csv").write_text("\n".join(rows[:161]) + "\n", encoding="utf-8")
    members = "".join(f'[[members]]\nname = "{a}"\ninit = "scratch"\narch = "{a}"\n' for a in ("bert", "roberta"))
    base = '[data]\ntrain = "train.csv"\nvalid_fraction = 0.25\n[defaults]\nepochs = 1\nmax_length = 32\n'
    (tmp_path / "r.toml").write_text(base + members, encoding="utf-8")
    run = tmp_path / "run"
    assert cli(["fit", str(tmp_path / "r.toml"), "--out", str(run), "--quiet", "--concurrent", "1"])[0] == 0
    # roberta left out of the recipe: --resume must not delete a trained member
    (tmp_path / "one.toml").write_text(base + members.split("[[members]]\nname = \"roberta\"")[0], encoding="utf-8")
    code, out, err = cli(["fit", str(tmp_path / "one.toml"), "--out", str(run), "--quiet", "--resume"])
    assert code == 0, err
    assert "roberta: in " in out and "not in the recipe; kept there, left out of the vote" in out
    assert (run / "members" / "roberta" / "model.safetensors").is_file()
    assert list(json.loads((run / "ensemble.json").read_text())["members"]) == ["bert"]
    # same settings, other rows: not "already trained", trained again and said why
    (tmp_path / "train.csv").write_text("\n".join([rows[0], *rows[161:321]]) + "\n", encoding="utf-8")
    code, out, err = cli(["fit", str(tmp_path / "one.toml"), "--out", str(run), "--quiet", "--resume"])
    assert code == 0, err
    assert "bert: its train rows changed since it was trained (other texts or labels); training it again" in out
    assert "already trained" not in out


def test_a_second_fit_on_a_run_directory_in_use_is_refused(tmp_path, cli):
    from ensemble.fit import OutLock

    rows = (ROOT / "recipes" / "demo" / "train.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.csv").write_text("\n".join(rows[:121]) + "\n", encoding="utf-8")
    (tmp_path / "r.toml").write_text('[data]\ntrain = "train.csv"\nvalid_fraction = 0.25\n[defaults]\nepochs = 1\n'
                                     + "".join(f'[[members]]\nname = "{a}"\ninit = "scratch"\narch = "{a}"\n'
                                               for a in ("bert", "roberta")), encoding="utf-8")
    held = OutLock()
    held.acquire(tmp_path / "run")  # the first run, still training
    (tmp_path / "run" / "members").mkdir()
    for extra in (["--overwrite", "--concurrent", "2"], ["--overwrite", "--concurrent", "1"], ["--resume"]):
        code, _, err = cli(["fit", str(tmp_path / "r.toml"), "--out", str(tmp_path / "run"), "--quiet", *extra])
        assert code == 2 and err == (f"error: --out: '{tmp_path / 'run'}' is in use by another 'ensemble fit'; "
                                     "wait for it to end, or choose another --out\n"), err
    assert list((tmp_path / "run").iterdir()) == [tmp_path / "run" / "members"]  # untouched
    held.release()
    assert cli(["fit", str(tmp_path / "r.toml"), "--out", str(tmp_path / "run"), "--quiet", "--overwrite",
                "--concurrent", "1"])[0] == 0


def test_resume_clears_what_a_killed_run_left_half_moved(tmp_path, cli):
    rows = (ROOT / "recipes" / "demo" / "train.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.csv").write_text("\n".join(rows[:121]) + "\n", encoding="utf-8")
    (tmp_path / "r.toml").write_text('[data]\ntrain = "train.csv"\nvalid_fraction = 0.25\n[defaults]\nepochs = 1\n'
                                     '[[members]]\nname = "bert"\ninit = "scratch"\narch = "bert"\n', encoding="utf-8")
    run = tmp_path / "run"
    assert cli(["fit", str(tmp_path / "r.toml"), "--out", str(run), "--quiet"])[0] == 0
    leftovers = [run / "members" / n for n in (".bert.tmp-4242", ".bert.old-4243", ".bert.ckpt")]
    for path in leftovers:
        (path / "sub").mkdir(parents=True)
    code, out, err = cli(["fit", str(tmp_path / "r.toml"), "--out", str(run), "--quiet", "--resume"])
    assert code == 0 and "bert: already trained with these settings; kept" in out, err
    assert not any(path.exists() for path in leftovers)
    assert (run / "members" / "bert" / "model.safetensors").is_file()


def test_resume_says_why_it_retrains_a_member_whose_recipe_json_is_damaged(tmp_path):
    from ensemble.fit import changed
    from ensemble.recipe import MemberConfig

    member = tmp_path / "members" / "bert"
    member.mkdir(parents=True)
    (member / "model.safetensors").write_bytes(b"")
    (member / "recipe.json").write_text('{"member": ', encoding="utf-8")
    why = changed(member, MemberConfig("bert", init="scratch", arch="bert"), ["a", "b"])
    assert why == "its recipe.json is missing or not valid JSON, so what it was trained with is unknown"
    assert changed(tmp_path / "members" / "none", MemberConfig("bert", init="scratch", arch="bert"), ["a", "b"]) is None


def test_resume_retrains_a_member_whose_local_base_changed_and_keeps_one_whose_project_moved(tmp_path, cli):
    import shutil

    from safetensors.torch import save_file

    from ensemble.members import build_member
    from ensemble.recipe import MemberConfig

    rows = (ROOT / "recipes" / "demo" / "train.csv").read_text(encoding="utf-8").splitlines()
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "train.csv").write_text("\n".join(rows[:121]) + "\n", encoding="utf-8")
    # a local Hugging Face checkpoint to fine-tune: a tiny BERT, untrained
    model, tokenizer = build_member(MemberConfig("b", init="scratch", arch="bert"), ["a", "b"], rows[1:121])
    model.save_pretrained(proj / "base")
    tokenizer.save_pretrained(proj / "base")
    (proj / "r.toml").write_text('[data]\ntrain = "train.csv"\nvalid_fraction = 0.25\n[defaults]\nepochs = 1\n'
                                 'max_length = 32\n[[members]]\nname = "ft"\nmodel = "base"\n', encoding="utf-8")
    assert cli(["fit", str(proj / "r.toml"), "--out", str(proj / "run"), "--quiet"])[0] == 0
    recorded = json.loads((proj / "run" / "members" / "ft" / "recipe.json").read_text())["base_fingerprint"]
    assert recorded.startswith("sha256:")

    # the project moved: the same base at another path is the same model
    shutil.copytree(proj, tmp_path / "proj2")
    code, out, err = cli(["fit", str(tmp_path / "proj2" / "r.toml"), "--out", str(tmp_path / "proj2" / "run"),
                          "--quiet", "--resume"])
    assert code == 0 and "ft: already trained with these settings; kept" in out, out + err

    # other weights in the base directory: trained again, and said why
    weights = load_file(proj / "base" / "model.safetensors")
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, proj / "base" / "model.safetensors")
    code, out, err = cli(["fit", str(proj / "r.toml"), "--out", str(proj / "run"), "--quiet", "--resume"])
    assert code == 0, err
    assert (f"ft: its base model's files changed since it was trained (model '{(proj / 'base').resolve()}'); "
            "training it again") in out
    assert "already trained" not in out
    assert json.loads((proj / "run" / "members" / "ft" / "recipe.json").read_text())["base_fingerprint"] != recorded


class _Rank:
    """An accelerator's view from one process of two, enough for `Checkpoint.save`."""

    num_processes, device = 2, "cpu"

    def __init__(self, main: bool):
        self.is_main_process, self.saved = main, []

    def reduce(self, tensor, op):
        return tensor

    def wait_for_everyone(self):
        pass

    def save_state(self, directory):
        self.saved.append(Path(directory).name)


def test_every_rank_saves_into_the_slot_the_main_one_points_to(tmp_path):
    # rank 1 kept writing its RNG state into slot 0 while progress.json named slot 1: a resumed
    # 2-process run then drew other random numbers on rank 1 than the uninterrupted run did
    from ensemble.checkpoint import Checkpoint, Progress

    slots = {}
    for main in (True, False):
        rank, progress = _Rank(main), Progress(fingerprint="f", micro_batch_size=8)
        ckpt = Checkpoint(tmp_path / ("main" if main else "other"), "f")
        for _ in range(3):
            ckpt.save(rank, progress, None)
        slots[main] = rank.saved
    assert slots[True] == slots[False] == ["state-0", "state-1", "state-0"]
