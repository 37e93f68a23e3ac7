"""The benchmark scripts stay runnable: each imports and parses its arguments (`--help`), and
benchmarks/device.sh, the one prepared run of the GPU measurements, runs through at toy sizes.

They are run by hand (minutes to an hour each, some on a GPU machine only), so nothing else
would notice a script broken by a change to the library it measures.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "shared_data.py")


def test_every_script_is_covered():
    assert set(SCRIPTS) == {"aggregate.py", "combining.py", "cpu_step.py", "mfu.py", "predict.py", "profile_step.py", "train.py"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_imports_and_parses_its_arguments(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: "), done.stdout[:500]


def test_cpu_step_times_every_variant():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "cpu_step.py"), "--batch", "2", "--length", "8",
                           "--rounds", "1", "--block", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    names = ["PyTorch, every token", "PyTorch", "ensemble, dense embedding", "ensemble"]
    rows = re.findall(r"^\| ([\w ,]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", done.stdout, re.M)
    assert [r[0] for r in rows] == names and rows[0][3] == "1.000", done.stdout
    assert all(float(r[1]) > 0 for r in rows)


def test_shared_data_follows_the_environment(monkeypatch, tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import shared_data
    finally:
        sys.path.remove(str(BENCHMARKS))
    monkeypatch.delenv("ENSEMBLE_DATA", raising=False)
    assert shared_data.cs224n() == BENCHMARKS.parents[1] / "shared" / "data" / "cs224n"
    monkeypatch.setenv("ENSEMBLE_DATA", str(tmp_path))
    assert shared_data.cs224n() == tmp_path / "cs224n"


@pytest.mark.slow
def test_device_script_runs_at_toy_sizes(shared_data, tmp_path):
    """benchmarks/device.sh is what a session lent a GPU runs, once, with minutes it cannot spend on
    a broken script: at toy sizes on the CPU (SMOKE=1) every stage must finish and write its file."""
    env = {**os.environ, "SMOKE": "1", "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "ENSEMBLE_DATA": str(shared_data)}
    done = subprocess.run(["bash", str(BENCHMARKS / "device.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "out" / "device.log").read_text()
    stages = re.findall(r"^== (\S+): exit (\d+) after", log, flags=re.M)
    assert stages == [(name, "0") for name in ("env", "sweep", "tests-short", "mfu", "aggregate", "predict")], log[-3000:]
    results = {name: json.loads((tmp_path / "out" / f"{name}.json").read_text())
               for name in ("aggregate", "mfu", "predict-bf16", "sweep")}
    sweep = results["sweep"]["gpu"]["results"]
    assert {(r["members"], r["classes"]) for r in sweep} == {(4, 2), (8, 5), (8, 20), (16, 2), (16, 5), (16, 20)}
    assert all(r["same_as_default"] and r["default_equals_reference"] for r in sweep)
    assert {r["launch"] for r in sweep} >= {"tile (lanes along classes)", "rows 64/2w", "rows 32/1w", "rows 64/2w, no counts"}
    assert {r["dtype"] for r in results["aggregate"]["gpu"]["results"]} == {"float32", "bfloat16"}
    assert results["mfu"]["samples_per_s"] > 0
    assert results["predict-bf16"]["identical_labels"] == results["predict-bf16"]["rows"] == 64


@pytest.mark.slow
def test_device_script_runs_chosen_stages(shared_data, tmp_path):
    """STAGES picks stages and orders them: the training-step profile (not a default stage) before
    env, at toy sizes. (The sweep's own checks are in the default run above.)"""
    env = {**os.environ, "SMOKE": "1", "STAGES": "profile env", "OUT": str(tmp_path / "out"),
           "PYTHON": sys.executable, "ENSEMBLE_DATA": str(shared_data)}
    done = subprocess.run(["bash", str(BENCHMARKS / "device.sh")], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "out" / "device.log").read_text()
    assert re.findall(r"^== (\S+): exit (\d+) after", log, flags=re.M) == [("profile", "0"), ("env", "0")]
    assert not (tmp_path / "out" / "sweep.json").exists()
    profile = json.loads((tmp_path / "out" / "profile.json").read_text())
    assert profile[0]["batch"] == 2 and profile[0]["wall_ms"] > 0


def test_device_script_rejects_an_unknown_stage(shared_data, tmp_path):
    env = {**os.environ, "STAGES": "env aggregat", "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "ENSEMBLE_DATA": str(shared_data), "SMOKE": "1"}
    done = subprocess.run(["bash", str(BENCHMARKS / "device.sh")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unknown stage 'aggregat'; known: env aggregate sweep" in done.stderr


def test_device_script_refuses_a_missing_data_copy(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "ENSEMBLE_DATA": str(tmp_path / "nowhere")}
    done = subprocess.run(["bash", str(BENCHMARKS / "device.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "holds no ids-sst-train.csv; copy the data first" in done.stderr
