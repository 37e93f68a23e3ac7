"""The benchmark scripts stay runnable: each imports and parses its arguments (`--help`).

They are run by hand (minutes to an hour each, some on a GPU machine only), so nothing else
would notice a script broken by a change to the library it measures.
"""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "shared_data.py")


def test_every_script_is_covered():
    assert set(SCRIPTS) == {"aggregate.py", "combining.py", "mfu.py", "predict.py", "train.py"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_imports_and_parses_its_arguments(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: "), done.stdout[:500]


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
