"""The command line: one-line errors with exit code 2, bugs exit 1, --debug shows tracebacks,
and the shipped project1 recipe runs offline with --scratch tiny."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ensemble import Ensemble
from ensemble.cli import main
from ensemble.flags import expand_multi
from ensemble.errors import EnsembleError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "demo"


def small_recipe(tmp_path: Path, members: str = "bert,roberta", extra: str = "") -> Path:
    lines = (DEMO / "train.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.csv").write_text("\n".join(lines[:301]) + "\n", encoding="utf-8")
    body = "".join(f'[[members]]\nname = "{a}"\ninit = "scratch"\narch = "{a}"\n' for a in members.split(","))
    recipe = tmp_path / "small.toml"
    recipe.write_text(f'[data]\ntrain = "train.csv"\nvalid_fraction = 0.2\n\n[defaults]\nepochs = 1\nmax_length = 32\n'
                      f'lr = 5e-4\n\n{body}{extra}', encoding="utf-8")
    return recipe


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    main(["fit", str(small_recipe(tmp)), "--out", str(tmp / "run"), "--quiet"])
    return tmp


@pytest.mark.parametrize("args, message", [
    (["fit", "nope.toml"], "error: recipe: file not found: 'nope.toml'"),
    (["fit", "{recipe}", "--set", "defaults.lr=-1"], "defaults.lr: must be > 0"),
    (["fit", "{recipe}", "--set", "members.bret.lr=1"], "no member named 'bret'"),
    (["fit", "{recipe}", "--set", "data.train=missing.csv"], "data.train"),
    (["fit", "{recipe}", "--scratch", "huge"], "--scratch: must be one of"),
    (["fit", "{recipe}", "--concurrent", "two"], "--concurrent: must be 'auto' or a whole number >= 1; got 'two'"),
    (["fit", "{recipe}", "--concurrent", "2", "--only", "bert"], "--concurrent: 2 workers cannot be combined with --only"),
    (["vote", "--members", "nowhere", "--data", "x.csv", "--out", "o"], "member 'nowhere' (nowhere): not a directory"),
    (["vote", "--members", "{member}", "--data", "x.csv", "--out", "o", "--method", "average"], "--method: must be one of {'hard', 'soft', 'weighted', 'selection', 'stacking'}; got 'average'"),
    (["vote", "--members", "{member}", "--data", "x.csv", "--out", "o", "--weights", "bert"], "--weights: expected NAME=NUMBER"),
    (["vote", "--members", "{member}", "--data", "x.csv", "--out", "o", "--weights", "bret=2"], "weights: no member named 'bret'"),
    (["vote", "--members", "{member}", "{member}", "--data", "x.csv", "--out", "o"], "two members are named 'bert'"),
    (["vote", "--members", "a/b={member}", "--data", "x.csv", "--out", "o"], "bad member name: use letters, digits, '-', '_' or '.' (it names a directory); got 'a/b'; choose another NAME in NAME=DIR"),
    (["vote", "--members", "{member}", "--data", "missing.csv", "--out", "o"], "--data"),
    (["vote", "--members", "{member}", "b={member}", "--weights", "bert=1", "bert=2", "--data", "x.csv", "--out", "o"],
     "--weights: 'bert' is given twice (1 and 2); give each member one weight"),
    (["predict", "--ensemble", "e", "--data", "x.csv", "--out", "p.jsonl"],
     "--out: 'p.jsonl' ends in .jsonl, and predictions are written as CSV; name it 'p.csv'"),
    (["predict", "--ensemble", "e", "--data", "x.csv", "--out", "p.csv", "--batch-size", "0"],
     "error: Invalid value for '--batch-size': Input should be greater than or equal to 1; got '0'"),
])
def test_user_errors_exit_2_with_one_line(fitted, cli, tmp_path, args, message):
    recipe = small_recipe(tmp_path)
    member = str(fitted / "run" / "members" / "bert")
    args = [a.format(recipe=recipe, member=member) for a in args]
    code, out, err = cli(args)
    assert code == 2, err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors_exit_2(cli):
    code, _, err = cli(["fit", "--no-such-flag"])
    assert code == 2 and "No such option" in err


def test_debug_shows_the_traceback_and_keeps_the_exit_code_of_a_wrong_input(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "nope.toml", "--debug"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "Traceback (most recent call last)" in err
    assert err.rstrip().splitlines()[-1].startswith("error: ") and "file not found" in err


class PanicException(BaseException):
    """Like pyo3's PanicException (a Rust panic in tokenizers or safetensors): not an Exception."""


@pytest.mark.parametrize("error", [RuntimeError, PanicException])
def test_internal_errors_exit_1(monkeypatch, cli, tmp_path, error):
    import ensemble.workers

    def broken(*args, **kwargs):
        raise error("boom")

    monkeypatch.setattr(ensemble.workers, "fit_concurrent", broken)
    code, _, err = cli(["fit", str(small_recipe(tmp_path))])
    assert code == 1 and f"internal error: {error.__name__}: boom" in err and "--debug" in err
    assert err.count("\n") == 1


def test_out_must_be_new_or_overwritten(fitted, cli, tmp_path):
    code, _, err = cli(["fit", str(small_recipe(tmp_path)), "--out", str(fitted / "run")])
    assert code == 2 and "already exists" in err and "--overwrite" in err


def test_hub_recipe_offline_names_the_scratch_switch(cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = cli(["fit", str(ROOT / "recipes" / "project1.toml"), "--out", "/tmp/never-written"])
    assert code == 2 and "--scratch tiny" in err and "albert-base-v2" in err
    assert not Path("/tmp/never-written").exists()


def test_vote_refuses_members_with_different_labels(fitted, cli, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(fitted / "run" / "members" / "bert", other)
    config = json.loads((other / "config.json").read_text())
    config["id2label"] = {"0": "bad", "1": "meh", "2": "good"}
    config["label2id"] = {"bad": 0, "meh": 1, "good": 2}
    (other / "config.json").write_text(json.dumps(config))
    code, _, err = cli(["vote", "--members", str(fitted / "run" / "members" / "bert"), str(other),
                            "--data", str(fitted / "train.csv"), "--out", str(tmp_path / "o")])
    assert code == 2 and "must be trained on the same label names" in err
    assert not (tmp_path / "o").exists()


def test_vote_on_unlabelled_data_writes_predictions_without_metrics(fitted, cli, tmp_path):
    data = tmp_path / "texts.jsonl"
    data.write_text('{"text": "the film is wonderful"}\n{"text": "the plot is dull"}\n', encoding="utf-8")
    members = [f"a={fitted / 'run' / 'members' / 'bert'}", f"b={fitted / 'run' / 'members' / 'roberta'}"]
    code, out, err = cli(["vote", "--members", *members, "--data", str(data), "--out", str(tmp_path / "o")])
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["rows"] == 2 and "accuracy" not in report["ensemble"] and list(report["members"]) == ["a", "b"]
    assert Ensemble.load(tmp_path / "o").predict(["the film is wonderful"])[0] in ("negative", "neutral", "positive")
    # the batch size changes how rows are grouped, not what is predicted
    code, out, err = cli(["vote", "--members", *members, "--data", str(data), "--out", str(tmp_path / "o1"),
                          "--batch-size", "1"])
    assert code == 0, err
    assert (tmp_path / "o1" / "predictions.csv").read_text() == (tmp_path / "o" / "predictions.csv").read_text()


def test_manifest_cannot_point_outside_its_directory(fitted, tmp_path):
    shutil.copytree(fitted / "run", tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "ensemble.json").read_text())
    manifest["members"]["bert"] = "../../elsewhere/bert"
    (tmp_path / "run" / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(EnsembleError, match="outside the ensemble directory"):
        Ensemble.load(tmp_path / "run")
    with pytest.raises(EnsembleError, match="no ensemble.json"):
        Ensemble.load(tmp_path)
    with pytest.raises(EnsembleError, match="path must be a str or Path; got NoneType None"):
        Ensemble.load(None)


def test_multi_value_flags_expand():
    assert expand_multi(["vote", "--members", "a", "b", "--data", "x", "--weights", "a=1", "b=2"]) == [
        "vote", "--members", "a", "--members", "b", "--data", "x", "--weights", "a=1", "--weights", "b=2"]


@pytest.mark.slow
def test_project1_runs_offline_with_scratch_tiny(cli, tmp_path):
    code, out, err = cli([
        "fit", str(ROOT / "recipes" / "project1.toml"), "--scratch", "tiny", "--out", str(tmp_path / "p1"),
        "--set", "defaults.epochs=1", "--set", "defaults.batch_size=32", "--set", "defaults.grad_accum=1",
        "--set", "defaults.max_length=48", "--quiet"])
    assert code == 0, err
    report = json.loads((tmp_path / "p1" / "report.json").read_text())
    assert list(report["members"]) == ["albert", "electra", "roberta", "bert"] and report["split"] == "test"
    card = (tmp_path / "p1" / "members" / "albert" / "README.md").read_text()
    assert "albert" in card and "| lr | 1e-05 *(not default)* |" in card


def test_console_script_exit_code_and_no_traceback(tmp_path):
    exe = Path(sys.executable).parent / "ensemble"
    result = subprocess.run([str(exe), "fit", str(tmp_path / "missing.toml")], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: recipe: file not found: '{tmp_path / 'missing.toml'}'"


LIGHT_SCRIPT = """
import sys
from pathlib import Path
from ensemble.cli import main
bad = Path(sys.argv[1])
bad.write_text('[data]\\ntrain = "train.csv"\\n[[members]]\\nname = "a"\\ninit = "scratch"\\narch = "bert"\\nlr = "fast"\\n')
for argv in (["--help"], ["fit", str(bad)]):
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    print(argv[0], code)
heavy = sorted(m for m in ("torch", "transformers", "sklearn", "scipy") if m in sys.modules)
print("heavy:", ",".join(heavy) or "none")
"""


def test_help_and_recipe_errors_answer_before_torch_is_imported(tmp_path):
    """`ensemble --help` and a recipe's one-line error take 0.2 s, not the 2 s of importing torch."""
    done = subprocess.run([sys.executable, "-c", LIGHT_SCRIPT, str(tmp_path / "bad.toml")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-3:] == ["--help 0", "fit 2", "heavy: none"], done.stdout + done.stderr
    assert done.stderr.strip() == "error: bad.toml: members[a].lr: must be a number; got 'fast' (str)"


def test_package_names_are_the_public_objects_whichever_module_loads_first():
    """`ensemble.aggregate` stays the function even when another module imported the submodule first."""
    script = ("import ensemble.ensemble, ensemble.aggregate, importlib\n"
              "from ensemble import Ensemble, Vote, aggregate, EnsembleError\n"
              "assert callable(aggregate) and aggregate.__module__ == 'ensemble.aggregate', aggregate\n"
              "assert importlib.import_module('ensemble.aggregate').aggregate is aggregate\n"
              "assert Ensemble.__name__ == 'Ensemble' and Vote.__name__ == 'Vote'\n"
              "import ensemble; assert set(ensemble.__all__) <= set(dir(ensemble))\n"
              "print('ok')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


def test_version_and_a_bare_command(cli):
    from ensemble import __version__

    assert cli(["--version"]) == (0, f"ensemble {__version__}\n", "")
    code, out, err = cli([])  # the help, and no empty "error:" line after it
    assert code == 2 and "Commands" in out + err and "error" not in out + err


def test_resume_says_when_there_is_nothing_to_continue(tmp_path, capsys):
    from ensemble.fit import check_out

    note = check_out(tmp_path / "new", overwrite=False, resume=True)
    assert note == f"--resume: nothing to continue in '{tmp_path / 'new'}'; training from the start"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "members").mkdir()
    assert check_out(tmp_path / "run", overwrite=False, resume=True) is None  # something to continue: no note
    assert capsys.readouterr().out == ""  # printed by fit, after the other checks


def test_library_setting_names_become_the_commands_flags():
    from ensemble.flags import as_flags

    exc = EnsembleError("abstain_accuracy: no threshold reaches accuracy 0.99 (the best is 0.9); lower it, "
                        "or set abstain_coverage instead; vote.abstain_below stays")
    assert str(as_flags(exc, "abstain_accuracy", "abstain_coverage", "abstain_below")) == (
        "--abstain-accuracy: no threshold reaches accuracy 0.99 (the best is 0.9); lower it, "
        "or set --abstain-coverage instead; vote.abstain_below stays")


@pytest.mark.parametrize("args, message", [
    (["vote", "--quite"], "error: No such option: --quite (did you mean --quiet?) (see 'ensemble vote --help')"),
    (["vote", "--verbose"], "error: No such option: --verbose (see 'ensemble vote --help')"),  # click offered --overwrite
    (["fit", "r.toml", "--ovewrite"], "error: No such option: --ovewrite (did you mean --overwrite?) (see 'ensemble fit --help')"),
    (["predict", "--ensembl", "x"], "error: No such option: --ensembl (did you mean --ensemble?) (see 'ensemble predict --help')"),
])
def test_unknown_flags_suggest_only_a_close_one(cli, args, message):
    code, out, err = cli(args)
    assert code == 2 and err.strip() == message


def test_flags_show_no_type_in_the_help(cli):
    code, out, _ = cli(["predict", "--help"])
    assert code == 0 and "<bool>" not in out
    assert "  --overwrite " in out and "  --chunk-rows <int range> " in out


def test_a_flag_value_click_refuses_is_quoted_back(cli):
    code, _, err = cli(["predict", "--ensemble", "e", "--data", "d.csv", "--out", "o.csv", "--chunk-rows", "0"])
    assert code == 2 and "Invalid value for '--chunk-rows'" in err and "; got '0' (see 'ensemble predict --help')" in err
    code, _, err = cli(["vote", "--members", "m", "--data", "d.csv", "--out", "o", "--abstain-below=abc"])
    assert code == 2 and "; got 'abc' (see 'ensemble vote --help')" in err


def test_a_killed_votes_temp_directory_is_removed_by_the_next(tmp_path):
    from ensemble.files import remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.tmp-{dead.stdout.strip()}"  # a process that has ended
    (stale / "plots").mkdir(parents=True)
    mine = tmp_path / f".out.tmp-{os.getpid()}"  # one still running keeps its own
    mine.mkdir()
    other = tmp_path / ".other.tmp-1"
    other.mkdir()
    alike = tmp_path / f".out.tmp-x-{dead.stdout.strip()}"  # not a name vote gives
    alike.mkdir()
    link = tmp_path / f".out.tmp-{int(dead.stdout.strip()) + 1000000}"
    link.symlink_to(other)
    assert remove_stale_temps(tmp_path / "out") == [stale]
    assert not stale.exists() and mine.is_dir() and other.is_dir() and alike.is_dir() and link.is_symlink()


@pytest.mark.parametrize("concurrent", ["1", "2"])
def test_a_data_setting_error_names_the_recipe_as_its_key_errors_do(tmp_path, cli, concurrent):
    recipe = small_recipe(tmp_path)
    code, out, err = cli(["fit", str(recipe), "--set", f"data.valid={tmp_path / 'train.csv'}", "--out",
                          str(tmp_path / "new"), "--resume", "--concurrent", concurrent])
    assert code == 2 and err.startswith("error: small.toml: data.valid: is the data.train file"), err
    assert "nothing to continue" not in out  # the --resume note comes only once the inputs are good


def test_fit_says_on_the_console_how_many_rows_it_skipped(tmp_path, cli):
    recipe = small_recipe(tmp_path, members="bert")
    with open(tmp_path / "train.csv", "a", encoding="utf-8") as f:
        f.write(",positive\nanother review,\n")  # an empty text and an empty label
    code, out, err = cli(["fit", str(recipe), "--set", "data.on_bad_rows=skip", "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 0, err
    assert 'note: skipped as bad (data.on_bad_rows = "skip"): 2 train rows; the report\'s Data section counts them' in out


def _with_ids(fitted: Path, path: Path, bad_line: int | None = None) -> list[str]:
    """The first 40 rows of the fitted train.csv with an id column in front; the row `bad_line`
    (1 = the first data row) loses its text. Returns the ids."""
    lines = (fitted / "train.csv").read_text(encoding="utf-8").splitlines()[1:41]
    ids = [f"row-{i}" for i in range(len(lines))]
    body = [f"{id_},{'' if i + 1 == bad_line else line.rsplit(',', 1)[0]},{line.rsplit(',', 1)[1]}"
            for i, (id_, line) in enumerate(zip(ids, lines))]
    path.write_text("id,text,label\n" + "\n".join(body) + "\n", encoding="utf-8")
    return ids


def test_predict_keeps_an_id_column_and_skips_bad_rows_when_asked(fitted, cli, tmp_path):
    data = tmp_path / "d.csv"
    ids = _with_ids(fitted, data, bad_line=5)
    base = ["predict", "--ensemble", str(fitted / "run"), "--data", str(data), "--quiet", "--chunk-rows", "7"]
    code, _, err = cli(base + ["--out", str(tmp_path / "p.csv"), "--keep-columns", "id"])
    assert code == 2 and err == (f"error: --data: line 6 of '{data}' has an empty text in column 'text'; fix the row "
                                 "or pass --on-bad-rows skip to leave it out\n")
    assert not (tmp_path / "p.csv").exists()
    code, out, err = cli(base + ["--out", str(tmp_path / "p.csv"), "--keep-columns", "id", "--on-bad-rows", "skip"])
    assert code == 0, err
    assert out == f"39 rows predicted: {tmp_path / 'p.csv'}\n"
    assert f"note: 1 bad row of '{data}' skipped (--on-bad-rows skip): not in '{tmp_path / 'p.csv'}'\n" in err
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["id", "text", "label"]
    assert [r["id"] for r in rows] == ids[:4] + ids[5:]  # chunked by 7: every id stays with its own row
    ens = Ensemble.load(fitted / "run")
    assert [r["ensemble_label"] for r in rows] == ens.predict([r["text"] for r in rows])
    # without an id to join on, the note says how to get one
    code, _, err = cli(base + ["--out", str(tmp_path / "q.csv"), "--on-bad-rows", "skip"])
    assert code == 0 and "--keep-columns ID copies an id column to join on" in err


def test_predict_resume_needs_the_same_kept_columns(fitted, cli, tmp_path):
    from ensemble.evaluate import _identity

    data = tmp_path / "d.csv"
    _with_ids(fitted, data)
    ens = Ensemble.load(fitted / "run")
    args = ["predict", "--ensemble", str(fitted / "run"), "--data", str(data), "--quiet", "--out", str(tmp_path / "p.csv")]
    (tmp_path / ".p.csv.partial").write_bytes(b"text\n")
    before = _identity(ens, data, "text", None, "label", 10_000, "none")
    (tmp_path / ".p.csv.partial.json").write_text(json.dumps({"identity": before, "rows": 1, "bytes": 5}))
    code, _, err = cli(args + ["--resume", "--keep-columns", "id"])
    assert code == 2 and "was written with other settings: --keep-columns [] (now ['id'])" in err, err
    # a state from before --keep-columns and --on-bad-rows existed is one written without them
    old = {k: v for k, v in before.items() if k not in ("--keep-columns", "--on-bad-rows")}
    (tmp_path / ".p.csv.partial.json").write_text(json.dumps({"identity": old, "rows": 1, "bytes": 5}))
    code, _, err = cli(args + ["--resume", "--on-bad-rows", "skip"])
    assert code == 2 and "other settings: --on-bad-rows 'error' (now 'skip')" in err, err
    # the same settings, but columns another version wrote (an abstaining ensemble gained `voted`): not continued
    (tmp_path / ".p.csv.partial").write_bytes(b"text,label,old_column\n")
    (tmp_path / ".p.csv.partial.json").write_text(json.dumps({"identity": old, "rows": 1, "bytes": 22}))
    code, _, err = cli(args + ["--resume"])
    assert code == 2 and err == (f"error: --resume: '{tmp_path / '.p.csv.partial'}' has other columns than this version "
                                 "writes (text, label, old_column); run without --resume to start over\n"), err


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--keep-columns", "nope", "error: --data: column 'nope' not found in '{data}'; columns found: id, text, label "
                               "(set --keep-columns to one of them)"),
    ("--keep-columns", "label", "error: --keep-columns: 'label' is a column the predictions have already (the gold "
                                "label); keep a column of another name, or rename it in the file"),
    ("--on-bad-rows", "drop", "error: --on-bad-rows: must be one of {'error', 'skip'}; got 'drop'"),
])
@pytest.mark.parametrize("command", ["predict", "vote"])
def test_keep_and_bad_row_flags_say_what_is_wrong(fitted, cli, tmp_path, command, flag, value, message):
    data = tmp_path / "d.csv"
    _with_ids(fitted, data)
    where = (["--ensemble", str(fitted / "run"), "--out", str(tmp_path / "p.csv")] if command == "predict" else
             ["--members", str(fitted / "run" / "members" / "bert"), "--out", str(tmp_path / "o")])
    code, _, err = cli([command, *where, "--data", str(data), flag, value, "--quiet"])
    assert code == 2 and err == message.replace("{data}", str(data)) + "\n"
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "o").exists()


def test_vote_keeps_columns_and_counts_the_rows_it_skipped(fitted, cli, tmp_path):
    data = tmp_path / "d.csv"
    ids = _with_ids(fitted, data, bad_line=1)
    members = [str(fitted / "run" / "members" / n) for n in ("bert", "roberta")]
    code, _, err = cli(["vote", "--members", *members, "--data", str(data), "--out", str(tmp_path / "o"),
                        "--keep-columns", "id", "--on-bad-rows", "skip", "--quiet"])
    assert code == 0, err
    assert "note: skipped as bad (--on-bad-rows skip): 1 --data row; the report's Data section counts them" in err
    with open(tmp_path / "o" / "predictions.csv", newline="", encoding="utf-8") as f:
        assert [r["id"] for r in csv.DictReader(f)] == ids[1:]
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["rows"] == 39 and report["data"]["skipped_rows"] == {"--data": 1}


def test_fit_keeps_the_reported_files_columns(tmp_path, cli):
    recipe = small_recipe(tmp_path, members="bert")
    lines = (tmp_path / "train.csv").read_text(encoding="utf-8").splitlines()
    (tmp_path / "test.csv").write_text("id,text,label\n" + "\n".join(f"t{i},{line}" for i, line in
                                                                   enumerate(lines[1:31])) + "\n", encoding="utf-8")
    (tmp_path / "train.csv").write_text("\n".join(lines[:1] + lines[31:]) + "\n", encoding="utf-8")
    code, _, err = cli(["fit", str(recipe), "--set", f"data.test={tmp_path / 'test.csv'}", "--set",
                        "data.keep_columns=['bert_label']", "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 2 and err == ("error: small.toml: data.keep_columns: 'bert_label' is a column the predictions have "
                                 "already (a member's); keep a column of another name, or rename it in the file\n")
    # the test file has the id; the training file does not need it
    code, _, err = cli(["fit", str(recipe), "--set", f"data.test={tmp_path / 'test.csv'}", "--set",
                        "data.keep_columns=['id']", "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 0, err
    with open(tmp_path / "r" / "predictions.csv", newline="", encoding="utf-8") as f:
        assert [r["id"] for r in csv.DictReader(f)] == [f"t{i}" for i in range(30)]


@pytest.mark.parametrize("command", ["predict", "vote"])
def test_an_id_column_given_as_the_text_is_warned_about(fitted, cli, tmp_path, command):
    data = tmp_path / "d.csv"
    _with_ids(fitted, data)
    where = (["--ensemble", str(fitted / "run"), "--out", str(tmp_path / "p.csv")] if command == "predict" else
             ["--members", str(fitted / "run" / "members" / "bert"), "--out", str(tmp_path / "o")])
    code, _, err = cli([command, *where, "--data", str(data), "--text", "id", "--quiet", "--chunk-rows", "7"][
        : None if command == "predict" else -2])  # predict looks past its first chunk
    assert code == 0, err
    assert (f"warning: the text column 'id' of '{data}' holds no words: 40 of its 40 texts are numbers or ids "
            "(e.g. 'row-0'); name the text column with --text COLUMN\n") in err
    code, _, err = cli([command, *where, "--data", str(data), "--quiet", "--overwrite"])
    assert code == 0 and "holds no words" not in err


@pytest.mark.parametrize(("args", "message"), [
    (["predict", "--keep-columns", "--on-bad-rows", "skip"], "error: --keep-columns: needs at least one value; got none before --on-bad-rows\n"),
    (["vote", "--members", "--data", "x.csv"], "error: --members: needs at least one value; got none before --data\n"),
    (["predict", "--quiet", "--keep-columns"], "error: --keep-columns: needs at least one value; got none\n"),
])
def test_a_list_flag_without_values_is_named(cli, args, message):
    assert cli(args)[::2] == (2, message)


def test_a_list_flag_with_equals_takes_the_words_after_it():
    assert expand_multi(["predict", "--keep-columns=id", "note", "--quiet"]) == [
        "predict", "--keep-columns=id", "--keep-columns", "note", "--quiet"]
