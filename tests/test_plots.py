"""The report's PNG plots: written when their data is there, skipped when not, valid and stable."""

from __future__ import annotations

import doctest
import subprocess
import sys
import warnings

import matplotlib
import matplotlib.figure
import matplotlib.image
import numpy as np
import pytest

import ensemble.plots as plots_module
from ensemble.aggregate import aggregate
from ensemble.plots import write_plots
from ensemble.report import build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL = ["confusion", "agreement", "training", "coverage"]


def report(*, members: int = 3, classes: int = 3, gold: bool = True, extras: bool = True,
           names: list[str] | None = None, labels: list[str] | None = None) -> dict:
    """A real soft vote on seeded synthetic logits; ``extras`` adds training and abstention."""
    rng = np.random.default_rng(3)
    rows = 40
    names = names or [f"member{i}" for i in range(members)]
    labels = labels or [f"class {i}" for i in range(classes)]
    y_true = rng.integers(0, classes, rows)
    logits = rng.normal(size=(members, rows, classes))
    logits[:, np.arange(rows), y_true] += 1.5
    result = build_report(names=names, labels=labels, vote=aggregate(logits, "soft"),
                          method="soft", weights={n: 1 / members for n in names},
                          y_true=y_true if gold else None, texts=[f"t{i}" for i in range(rows)],
                          pairs=None, split="test")
    if extras:
        result["training"] = {
            name: [{"epoch": e, "train_loss": 1 / e + i / 50, "valid_loss": 0.8 / e + 0.1,
                    "accuracy": 0.6 + e / 20 - i / 100} for e in (1, 2, 3)]
            for i, name in enumerate(names)
        }
        result["abstention"] = {
            "on": "confidence", "threshold": 0.6, "abstained": 8, "coverage": 0.8,
            "accuracy_answered": 0.9,
            "curve": [{"threshold": t, "coverage": 1 - t * 0.9, "accuracy": 0.8 + t / 6}
                      for t in np.linspace(0, 0.9, 10).tolist()]
                     + [{"threshold": 1.0, "coverage": 0.0, "accuracy": None}],
        }
    return result


def check_png(path, max_side: int = 4000) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width, channels = matplotlib.image.imread(path).shape
    assert 150 <= height <= max_side and 300 <= width <= max_side and channels == 4
    return height, width


def test_every_plot_written_when_its_data_is_there_and_again_byte_for_byte(tmp_path):
    data = report()
    written = write_plots(data, tmp_path)
    assert written == {key: f"plots/{key}.png" for key in ALL}  # fixed order, relative paths
    sizes = {key: check_png(tmp_path / path) for key, path in written.items()}
    # One confusion panel per member plus the ensemble, side by side.
    assert sizes["confusion"][1] > 3 * sizes["confusion"][0]
    # Only the PNGs: no temporary file is left behind.
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        f"{key}.png" for key in ALL)
    # The same report gives the same bytes.
    assert write_plots(data, tmp_path / "again") == written
    for path in written.values():
        assert (tmp_path / path).read_bytes() == (tmp_path / "again" / path).read_bytes()


def test_plots_skipped_when_their_data_is_missing(tmp_path):
    assert list(write_plots(report(gold=False), tmp_path / "a")) == ALL[1:]  # no gold: no confusion
    assert list(write_plots(report(extras=False), tmp_path / "b")) == ALL[:2]
    # One member without gold: nothing to draw, and no empty plots folder either.
    assert write_plots(report(members=1, gold=False, extras=False), tmp_path / "c") == {}
    assert not (tmp_path / "c").exists()
    old = {"split": "test", "rows": 0, "method": "soft", "weights": {}, "labels": [],
           "members": {}, "ensemble": {}, "disputed": []}
    assert write_plots(old, tmp_path / "d") == {}


def test_partial_or_odd_optional_data_is_drawn_from_what_is_usable(tmp_path):
    odd = report()
    odd["training"] = {"member0": [{"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": None},
                                   "not a dict"],
                       "member1": []}
    odd["abstention"]["threshold"] = None  # nothing chosen: the curve without a marker
    assert list(write_plots(odd, tmp_path)) == ALL
    odd["training"] = {"member0": [{"epoch": 1}]}
    odd["abstention"]["curve"] = [{"threshold": 1.0, "coverage": 0.0, "accuracy": None}]
    assert list(write_plots(odd, tmp_path / "again")) == ALL[:2]


def test_many_classes_and_members_stay_readable_sizes(tmp_path):
    # Labels and names with "$" (matplotlib math), "_" (hidden legend entries), long text.
    labels = [f"label ${i}$ with a long name {i}" for i in range(20)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no glyph, layout or parsing warnings
        wide = write_plots(report(members=2, classes=20, labels=labels, extras=False),
                           tmp_path / "wide")
        many = write_plots(report(members=12, names=[f"_m${i}" for i in range(12)]),
                           tmp_path / "many")
    assert list(wide) == ALL[:2] and list(many) == ALL
    _, width = check_png(tmp_path / "wide" / wide["confusion"])
    assert width >= 700  # 20 x 20 cells need room: about 30 pixels a cell, beside the tick labels
    for key in many:
        check_png(tmp_path / "many" / many[key])


@pytest.mark.parametrize("fallback", [True, False])
def test_labels_dejavu_lacks_are_drawn_with_an_installed_font_that_has_them(tmp_path, monkeypatch, fallback):
    # U+2312 is in DejaVu Sans Mono (shipped with matplotlib) and not in DejaVu Sans: it stands
    # for a CJK label on a machine with a CJK font
    assert plots_module.fallback_fonts(["arc \u2312"]) == ["DejaVu Sans Mono"]
    if not fallback:  # the control: without one, the glyph is missing (a box), which the check sees
        monkeypatch.setattr(plots_module, "_fonts_for", lambda texts: ([], {0x2312}))
    real, missing = plots_module._save, []

    def save(figure, path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            real(figure, path)
        missing.extend(str(w.message) for w in caught if "missing from" in str(w.message))

    monkeypatch.setattr(plots_module, "_save", save)
    write_plots(report(labels=["arc \u2312", "line", "dot"]), tmp_path)
    assert bool(missing) is not fallback
    assert matplotlib.rcParams["font.family"] == ["sans-serif"]  # the user's setting, back


def test_failed_save_keeps_the_old_png(tmp_path, monkeypatch):
    data = report(extras=False)
    write_plots(data, tmp_path)
    before = (tmp_path / "plots" / "confusion.png").read_bytes()

    def broken(self, handle, **kwargs):
        handle.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        write_plots(data, tmp_path)
    assert (tmp_path / "plots" / "confusion.png").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["agreement.png", "confusion.png"]


def test_no_global_matplotlib_state_is_touched(tmp_path):
    from matplotlib import _pylab_helpers

    def settings() -> dict:
        # Reading "backend" itself would make matplotlib pick one: compare it separately.
        return {key: matplotlib.rcParams[key] for key in matplotlib.rcParams if key != "backend"}

    rc_before = settings()
    backend_before = matplotlib.rcParams._get_backend_or_none()
    figures_before = _pylab_helpers.Gcf.get_num_fig_managers()
    write_plots(report(), tmp_path)
    assert settings() == rc_before
    assert matplotlib.rcParams._get_backend_or_none() == backend_before
    assert _pylab_helpers.Gcf.get_num_fig_managers() == figures_before


def test_importing_the_report_modules_does_not_import_matplotlib():
    # The CLI imports ensemble.report; matplotlib must wait until a plot is drawn.
    code = ("import sys, ensemble.report, ensemble.plots, ensemble.render; "
            "sys.exit('matplotlib' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120, check=False).returncode == 0


def test_docstring_examples():
    assert doctest.testmod(plots_module).failed == 0


def _texts(labels) -> list[str]:
    return [label.get_text() for label in labels]


def test_names_that_differ_only_at_the_end_stay_apart_on_every_plot():
    names = [f"roberta_large_lr2e-5_seed{i}" for i in range(3)]
    labels = ["sentiment_negative_strong", "sentiment_negative_weak", "positive"]
    data = report(names=names, labels=labels)
    agreement = plots_module._agreement(data).axes[0]
    for ticks in (agreement.get_xticklabels(), agreement.get_yticklabels()):
        assert len(set(_texts(ticks))) == 3 and all(t.endswith(f"seed{i}") for i, t in enumerate(_texts(ticks)))
    assert agreement.get_xticklabels()[0].get_rotation() == 90  # long names never run into each other
    confusion = plots_module._confusion(data).axes[0]
    assert _texts(confusion.get_yticklabels()) == ["sentimen…ve_strong", "sentimen…tive_weak", "positive"]
    legend = plots_module._training(data).legends[0]
    assert [t.get_text() for t in legend.get_texts()] == plots_module._distinct(names)
    assert len(set(plots_module._distinct(names))) == 3


def test_long_label_names_widen_the_confusion_panels_instead_of_squeezing_the_cells():
    short = plots_module._confusion(report(labels=["a", "b", "c"]))
    long = plots_module._confusion(report(labels=["x" * 17 + "a", "x" * 17 + "b", "c"]))
    assert long.get_figwidth() > short.get_figwidth() + 1.0


def test_plots_say_which_split_and_rows_they_show():
    data = report()
    assert "on test, 40 rows" in plots_module._agreement(data).axes[0].get_title()
    assert "on test, 40 rows" in plots_module._confusion(data).get_suptitle()
    assert "on test, 40 rows" in plots_module._coverage(data).axes[0].get_title()
    # With abstention on, the ensemble's matrix (the first) counts every row: its panel says so.
    titles = [ax.get_title() for ax in plots_module._confusion(data).axes if ax.get_title()]
    assert titles[0].startswith("ensemble") and "before abstention" in titles[0]
    assert not any("before abstention" in t for t in titles[1:])


def test_agreement_heatmap_tells_near_agreement_from_full_agreement():
    data = report(members=3)
    data["agreement"]["pairwise"]["member0"]["member1"] = data["agreement"]["pairwise"]["member1"]["member0"] = 0.9967
    texts = [t.get_text() for t in plots_module._agreement(data).axes[0].texts]
    assert "0.997" in texts and "1.00" not in texts and "1.000" not in texts  # diagonal left blank
    assert len(texts) == 6


@pytest.mark.parametrize("accuracies, span", [((0.9848, 0.985), 0.05), ((0.6, 0.9), 0.3)])
def test_coverage_axis_never_blows_a_few_rows_up_into_a_cliff(accuracies, span):
    data = report()
    low, high = accuracies
    data["abstention"]["curve"] = [{"threshold": 0.1, "coverage": 1.0, "accuracy": low},
                                   {"threshold": 0.9, "coverage": 0.5, "accuracy": high}]
    ax = plots_module._coverage(data).axes[0]
    bottom, top = ax.get_ylim()
    assert top - bottom >= span and bottom <= low and top >= high
    assert any("answering every row (%.3f)" % low in t.get_text() for t in ax.get_legend().get_texts())


def test_a_plot_this_report_has_no_data_for_is_removed_not_left_stale(tmp_path):
    write_plots(report(members=3), tmp_path)
    assert (tmp_path / "plots" / "agreement.png").exists()
    written = write_plots(report(members=1), tmp_path)  # one member: no agreement to draw
    assert "agreement" not in written and not (tmp_path / "plots" / "agreement.png").exists()
    assert (tmp_path / "plots" / "confusion.png").exists()


def test_many_classes_compare_the_members_by_recall_under_the_ensembles_matrix():
    import numpy as np

    labels = [f"class_{i:02d}" for i in range(20)]
    rng = np.random.default_rng(0)

    def matrix():
        counts = rng.integers(0, 3, (20, 20))
        counts[np.diag_indices(20)] += 20
        return counts.tolist()

    members = {f"roberta_large_lr2e-5_seed{i}": {"accuracy": 0.8, "confusion": matrix()} for i in range(8)}
    data = {"labels": labels, "members": members, "ensemble": {"accuracy": 0.9, "confusion": matrix()},
            "split": "test", "rows": 900}
    figure = plots_module._confusion(data)
    # one matrix and one heatmap, not 9 matrices stacked screens tall
    assert figure.get_figheight() < 16 and "per-class recall" in figure.get_suptitle()
    titled = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in titled] == ["ensemble", "Recall per gold class (share of its rows predicted right)"]
    rows = [t.get_text() for t in titled[1].get_yticklabels()]
    assert rows == ["ensemble", *plots_module._distinct(list(members))] and len(set(rows)) == 9
    data["ensemble"]["confusion"] = np.diag([299] + [1] * 19).tolist()  # recall 1 (shown "1") ...
    data["ensemble"]["confusion"][0][1] = 1  # ... but for the first class: 299 of 300, which rounds to 1
    data["ensemble"]["confusion"][1][2] = 3  # and 1 of 4
    figure = plots_module._confusion(data)
    cells = [t.get_text() for t in [ax for ax in figure.axes if ax.get_title()][1].texts][:3]
    assert cells == ["1", ".25", "1"]
    few = plots_module._confusion({**data, "labels": labels[:3], "members": {
        n: {"confusion": [[5, 0, 0], [0, 5, 0], [0, 0, 5]]} for n in members},
        "ensemble": {"confusion": [[5, 0, 0], [0, 5, 0], [0, 0, 5]]}})
    titles = [ax.get_title() for ax in few.axes if ax.get_title()]
    assert titles[0] == "ensemble" and len(set(titles)) == 9  # members told apart by their ends


def test_labels_no_installed_font_draws_are_said_once(tmp_path, capsys, monkeypatch):
    # as on a machine without CJK fonts
    monkeypatch.setattr(plots_module, "_fonts_for", lambda texts: ([], {ord(c) for t in texts for c in str(t) if ord(c) > 0x3000}))
    data = report(labels=["日本語", "neg", "pos"])
    plots_module.write_plots(data, tmp_path)
    err = capsys.readouterr().err
    assert err == ("note: no installed font draws every character of '日本語'; the plots show boxes for them (install a "
                   "font that has them, e.g. Noto: fonts-noto-cjk for Chinese, Japanese and Korean)\n")
    plots_module.write_plots(report(labels=["éducation", "neg", "pos"]), tmp_path)
    assert capsys.readouterr().err == ""  # DejaVu draws it
