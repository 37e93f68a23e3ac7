"""report.md and report.html from a report dict: the new sections, escaping, old reports, files."""

from __future__ import annotations

import doctest
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

import ensemble.render as render_module
from ensemble.aggregate import aggregate
from ensemble.markup import md_inline
from ensemble.render import html, markdown
from ensemble.report import build_report, write_report

NAMES = ["albert", "electra", "roberta"]
LABELS = ["negative", "neutral", "positive"]
ROWS = 30
SCRIPT = "<script>alert('pwned')</script>"
PLOTS = {"confusion": "plots/confusion.png", "agreement": "plots/agreement.png",
         "training": "plots/training.png", "coverage": "plots/coverage.png"}


def base_report(*, gold: bool = True, members: int = 3) -> dict:
    """A real vote on seeded synthetic logits, through build_report: the always-present keys."""
    rng = np.random.default_rng(7)
    y_true = rng.integers(0, len(LABELS), ROWS)
    logits = rng.normal(size=(members, ROWS, len(LABELS)))
    logits[:, np.arange(ROWS), y_true] += 1.0  # members better than chance, but not unanimous
    texts = [f"row {i}: {SCRIPT} & \"quotes\" | pipe" for i in range(ROWS)]
    return build_report(names=NAMES[:members], labels=LABELS, vote=aggregate(logits, "soft"),
                        method="soft", weights={n: 1 / members for n in NAMES[:members]},
                        y_true=y_true if gold else None, texts=texts, pairs=None, split="test")


def full_report() -> dict:
    """`base_report` plus every optional key, with round numbers to look for in the pages."""
    report = base_report()
    for i, name in enumerate(NAMES):
        report["members"][name].update(nll=0.5 + i / 10, ece=0.05 + i / 100)
    report["ensemble"].update(nll=0.45, ece=0.04)
    report["calibration"] = {
        "fitted_on": "valid", "temperatures": {"albert": 1.25, "electra": 0.9, "roberta": 1.5},
        "members": {n: {"nll_before": 0.61, "ece_before": 0.081, "nll_after": 0.55,
                        "ece_after": 0.032} for n in NAMES},
        "ensemble": {"nll_before": 0.5, "ece_before": 0.07, "nll_after": 0.47, "ece_after": 0.02},
    }
    report["combining"] = {"method": "weighted", "fitted_on": "valid", "valid_rows": 120,
                           "weights": {"albert": 0.5, "electra": 0.3, "roberta": 0.2},
                           "valid": {"accuracy": 0.85, "nll": 0.41}}
    report["abstention"] = {
        "on": "confidence", "threshold": 0.6, "abstained": 6, "coverage": 0.8,
        "accuracy_answered": 0.9167,
        "curve": [{"threshold": 0.0, "coverage": 1.0, "accuracy": 0.8333},
                  {"threshold": 0.5, "coverage": 0.9, "accuracy": 0.8889},
                  {"threshold": 0.6, "coverage": 0.8, "accuracy": 0.9167},
                  {"threshold": 1.0, "coverage": 0.0, "accuracy": None}],
    }
    report["training"] = {
        name: [{"epoch": e, "train_loss": 0.8 - e / 5, "valid_loss": 0.6 - e / 10,
                "accuracy": 0.5 + e / 10, "seconds": 12.5, **({"kept": True} if (name, e) == ("roberta", 2) else {})}
               for e in (1, 2, 3)]
        for name in NAMES
    }
    report["data"] = {
        "skipped_rows": {"train": 3, "valid": 0, "test": 1},
        "truncated": {n: {"train": 12 + i, "valid": 2, "eval": 1} for i, n in enumerate(NAMES)},
        "max_length": {"albert": 128, "electra": 256, "roberta": 512},
    }
    return report


def tables(md: str) -> list[list[str]]:
    return [block.splitlines() for block in md.split("\n\n") if block.startswith("|")]


# --------------------------------------------------------------------------- markdown


def test_markdown_renders_the_new_sections_with_their_numbers():
    md = markdown(full_report(), PLOTS)
    headings = re.findall(r"^## (.+)$", md, flags=re.MULTILINE)
    assert headings == ["Metrics", "Pairwise agreement", "Cohen's kappa", "Ensemble confusion matrix",
                        "Calibration", "Combining", "Abstention", "Training", "Data",
                        "Disputed examples"]
    # Metrics grow NLL and ECE columns.
    assert "| mean confidence | NLL (calibrated) | ECE (calibrated) |" in md
    assert re.search(r"^\| electra \| 0\.3333 \|( [0-9.]+ \|){5} 0\.6000 \| 0\.0600 \|$", md, re.MULTILINE)
    # Calibration: temperature, then NLL and ECE before and after.
    assert "| model | temperature | NLL before | NLL after | ECE before | ECE after |" in md
    assert "| albert | 1.2500 | 0.6100 | 0.5500 | 0.0810 | 0.0320 |" in md
    assert "| **ensemble** |  | 0.5000 | 0.4700 | 0.0700 | 0.0200 |" in md
    assert "Temperatures fitted on `valid`" in md
    # Combining.
    assert "- Method: weighted\n- Fitted on: `valid` (120 rows)" in md
    assert "- Validation accuracy: 0.8500\n- Validation NLL: 0.4100" in md
    assert "| model | weight |\n| --- | ---: |\n| albert | 0.5000 |" in md
    # Abstention, its curve as a table (no accuracy where nothing is answered).
    assert "- Abstain on: confidence\n- Threshold: 0.6000\n- Abstained rows: 6 of 30" in md
    assert "- Coverage: 0.8000\n- Accuracy on answered rows: 0.9167" in md
    assert "| threshold | coverage | accuracy |\n| ---: | ---: | ---: |" in md
    assert "| 0.5000 | 0.9000 | 0.8889 |" in md and "| 1.0000 | 0.0000 |  |" in md
    # Training: the kept epoch (the last where none is marked), extra numbers (seconds) as further columns.
    assert "| model | epochs trained | kept epoch | train loss | valid loss | valid accuracy | epoch seconds |" in md
    assert "| roberta | 3 | 2 | 0.4000 | 0.4000 | 0.7000 | 12.5 |" in md
    assert "| albert | 3 | 3 | 0.2000 | 0.3000 | 0.8000 | 12.5 |" in md
    # Data: skipped rows per split, truncation per member ("eval" is this report's split: test).
    assert "| split | rows skipped |" in md and "| train | 3 |" in md and "| test | 1 |" in md
    assert "| model | max length | train | valid | test |" in md and "eval" not in md
    assert "| electra | 256 | 13 | 2 | 1 |" in md
    # Plots are linked in their sections.
    for key, alt in (("confusion", "Confusion matrices"), ("agreement", "Pairwise agreement"),
                     ("training", "Training curves"), ("coverage", "Accuracy against coverage")):
        assert re.search(rf"^!\[{alt}[^\]]*\]\(plots/{key}\.png\)$", md, re.MULTILINE), key
    assert md.index("plots/coverage.png") > md.index("## Abstention") > md.index("## Combining")
    # Every table row has as many cells as its header.
    for table in tables(md):
        counts = {line.replace("\\|", "").count("|") for line in table}
        assert len(counts) == 1, table


def test_markdown_selection_picks_and_no_weights_for_stacking():
    report = full_report()
    report["combining"] = {"method": "selection", "fitted_on": "valid", "valid_rows": 50,
                           "weights": {"albert": 0.6, "electra": 0.4, "roberta": 0.0},
                           "picks": {"albert": 3, "electra": 2}, "valid": {"accuracy": 0.9}}
    md = markdown(report)
    assert "| model | weight | picks |" in md and "| roberta | 0.0000 | 0 |" in md
    assert "| albert | 0.6000 | 3 |" in md
    report["combining"] = {"method": "stacking", "fitted_on": "valid", "valid_rows": 50,
                           "valid": {"accuracy": 0.9, "nll": 0.3}}
    section = markdown(report).split("## Combining")[1].split("##")[0]
    assert "- Method: stacking" in section and "|" not in section  # no weights table


def test_markdown_without_plots_or_optional_keys_is_the_old_report():
    report = base_report(gold=False)
    md = markdown(report)
    assert md == markdown(report, {})
    assert "![" not in md and "plots/" not in md
    for absent in ("Calibration", "Combining", "Abstention", "Training", "## Data", "NLL", "ECE"):
        assert absent not in md
    assert "| model | weight | mean confidence |" in md
    assert "confusion" not in md.lower() and "accuracy" not in md.lower()
    # Old reports also lack "agreement" and "disputed" can be empty.
    minimal = {k: v for k, v in report.items() if k != "agreement"} | {"disputed": []}
    assert re.findall(r"^## (.+)$", markdown(minimal), flags=re.MULTILINE) == ["Metrics"]


def test_markdown_escapes_table_syntax_and_html_in_texts():
    md = markdown(base_report())
    disputed = md.split("## Disputed examples")[1]
    assert "\\<script\\>" in disputed and "<script>" not in disputed
    assert "pipe" in disputed and " | pipe" not in disputed and "\\| pipe" in disputed


@pytest.mark.parametrize("text, shown", [
    ("*a*", "\\*a\\*"), ("_a_", "\\_a\\_"), ("&lt;b&gt;", "\\&lt;b\\&gt;"),
    ("[click](http://x)", "\\[click\\](http://x)"), ("![x](http://e.com/p.png)", "\\!\\[x\\](http://e.com/p.png)"),
    ("a|b", "a\\|b"), ("0.9000", "0.9000"), ("out-of-fold (5 folds)", "out-of-fold (5 folds)"),
    ("charming! R&D #1", "charming! R&D #1"), ("m_1, _b", "m_1, \\_b"),
])
def test_markdown_shows_a_label_as_written_not_as_markup(text, shown):
    # a label "![x](url)" must not become an image that a markdown viewer fetches
    assert md_inline(text) == shown


def test_the_labels_line_keeps_each_label_one(tmp_path):
    md = markdown({**base_report(), "labels": ["neg, bad", "neutral", "*pos*"]})
    assert "Labels: `neg, bad`, `neutral`, `*pos*`" in md


def test_unknown_plot_keys_get_a_plots_section():
    md = markdown(base_report(), {"calibration": "plots/calibration.png"})
    assert md.rstrip().endswith("## Plots\n\n![calibration](plots/calibration.png)")


# --------------------------------------------------------------------------- html


class TagChecker(HTMLParser):
    """Records every tag and attribute; fails on an end tag that closes the wrong element."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self):
        super().__init__()
        self.open: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, (tag, self.open)

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> TagChecker:
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.open == [], checker.open
    return checker


def test_html_escapes_texts_from_the_data():
    report = full_report()
    report["labels"][0] = "<b>neg</b>"
    report["disputed"][0]["text"] = f'{SCRIPT} "long" ' + "word " * 40
    page = html(report, PLOTS)
    assert "<script" not in page.lower() and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;neg&lt;/b&gt;" in page
    checker = parse(page)
    assert {tag for tag, _ in checker.tags} <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "ul", "li", "code",
        "strong", "table", "thead", "tbody", "tr", "th", "td", "span", "figure", "img",
        "figcaption"}
    # The shortened text keeps its full version as a hover title, parsed back intact.
    titles = [attrs["title"] for tag, attrs in checker.tags if tag == "span"]
    assert titles[0] == report["disputed"][0]["text"]
    assert "".join(checker.text).count(SCRIPT) == len(report["disputed"])  # shown as text


def test_html_has_the_sections_images_and_no_outside_resources():
    page = html(full_report(), PLOTS)
    checker = parse(page)
    headings = re.findall(r"<h2>(.+?)</h2>", page)
    assert headings[4:] == ["Calibration", "Combining", "Abstention", "Training", "Data",
                            "Disputed examples"]
    images = [attrs["src"] for tag, attrs in checker.tags if tag == "img"]
    assert sorted(images) == sorted(PLOTS.values())
    assert "<td>albert</td><td class=\"num\">1.2500</td><td class=\"num\">0.6100</td>" in page
    assert "<li>Fitted on: <code>valid</code> (120 rows)</li>" in page
    lowered = page.lower()
    for outside in ("http://", "https://", "<link", "@import", "url(", "<iframe", "javascript:"):
        assert outside not in lowered, outside
    assert not [name for _, attrs in checker.tags for name in attrs if name.startswith("on")]
    assert "script-src 'none'" in page  # browsers refuse scripts even if one slipped through


def test_html_of_an_old_report_without_plots():
    page = html(base_report(gold=False))
    parse(page)
    assert "<img" not in page and "Calibration" not in page
    assert page.startswith("<!DOCTYPE html>") and "<h2>Disputed examples</h2>" in page


# --------------------------------------------------------------------------- files


def test_write_report_writes_json_pages_and_plots(tmp_path):
    report = full_report()
    write_report(tmp_path, report)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "plots", "report.html", "report.json", "report.md"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "agreement.png", "confusion.png", "coverage.png", "training.png"]
    saved = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert saved == report
    # Both pages come back byte for byte from the saved report.json alone.
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == markdown(saved, PLOTS)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page == html(saved, PLOTS)
    for tag, attrs in parse(page).tags:
        if tag == "img":
            assert (tmp_path / attrs["src"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_report_without_plots(tmp_path):
    write_report(tmp_path, full_report(), plots=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json", "report.md"]
    assert "plots/" not in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "<img" not in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_docstring_examples():
    assert doctest.testmod(render_module).failed == 0


@pytest.mark.parametrize("page", [markdown, html])
def test_rendering_does_not_change_the_report(page):
    report = full_report()
    before = json.dumps(report, sort_keys=True)
    page(report, PLOTS)
    assert json.dumps(report, sort_keys=True) == before


# --------------------------------------------------------------------------- caveats

WARNING = "these scores are measured on the 'valid' split, the rows the vote was fitted on; optimistic"


def test_the_warning_opens_both_pages():
    report = full_report() | {"warning": WARNING}
    md = markdown(report, PLOTS)
    assert md.startswith(
        "# Ensemble report: test\n\n"
        "> **Warning:** these scores are measured on the 'valid' split, the rows the vote was "
        "fitted on; optimistic\n\n- Split: `test`\n")
    page = html(report, PLOTS)
    parse(page)
    assert ("<h1>Ensemble report: test</h1>\n<p class=\"warning\"><strong>Warning:</strong> these "
            "scores are measured on the &#x27;valid&#x27; split, the rows the vote was fitted on; "
            "optimistic</p>\n<ul>\n<li>Split: <code>test</code></li>") in page
    # Older reports kept it in the combining section only: shown the same way.
    old = full_report()
    old["combining"]["warning"] = WARNING
    assert markdown(old, PLOTS) == md and html(old, PLOTS) == page
    # No warning, no box.
    assert "Warning" not in markdown(full_report()) and 'class="warning"' not in html(full_report())


def test_the_ensemble_metrics_row_says_it_is_before_abstention():
    md = markdown(full_report())  # threshold 0.6: 24 of 30 rows answered, 0.9167 of them right
    metrics = md.split("## Metrics")[1].split("\n## ")[0]
    assert ("| **ensemble (all rows, before abstention)** |  | 0.8000 | 0.7959 | 0.8036 | 0.7972 "
            "| 0.5517 | 0.4500 | 0.0400 |") in metrics
    assert ("\n\n**Ensemble after abstention** (abstains when confidence is below 0.6000): answers "
            "24 of 30 rows, coverage 0.8000; accuracy on the answered rows: 0.9167.\n\n") in metrics
    # Without a threshold (only the curve) nothing abstains: the plain row.
    report = full_report()
    report["abstention"]["threshold"] = None
    md = markdown(report)
    assert "| **ensemble** |  | 0.8000 | 0.7959 |" in md
    assert "abstention**" not in md and "before abstention" not in md
    assert "- Threshold: none (every row answered)" in md


def test_when_every_row_abstains_the_answered_accuracy_is_undefined_not_nan():
    report = full_report()
    report["abstention"].update(threshold=0.99, abstained=30, coverage=0.0, accuracy_answered=None)
    md = markdown(report)
    assert "| **ensemble (all rows, before abstention)** |  | 0.8000 |" in md
    assert ("**Ensemble after abstention** (abstains when confidence is below 0.9900): answers 0 of "
            "30 rows, coverage 0.0000; accuracy on the answered rows: undefined (no row answered).") in md
    assert "- Abstained rows: 30 of 30\n- Coverage: 0.0000\n- Accuracy on answered rows: undefined (no row answered)" in md
    assert not re.search(r"\bnan\b", md, re.IGNORECASE) and "n/a" not in md
    page = html(report)
    assert "<td><strong>ensemble (all rows, before abstention)</strong></td>" in page
    assert ("<p><strong>Ensemble after abstention</strong> (abstains when confidence is below 0.9900): "
            "answers 0 of 30 rows, coverage 0.0000; accuracy on the answered rows: undefined (no row "
            "answered).</p>") in page


def test_abstention_without_gold_labels_gives_coverage_only():
    report = base_report(gold=False)
    report["abstention"] = {"on": "agreement", "threshold": 0.5, "abstained": 4, "coverage": 0.8667}
    md = markdown(report)
    assert "| **ensemble (all rows, before abstention)** |  |" in md
    assert ("**Ensemble after abstention** (abstains when agreement is below 0.5000): answers 26 of "
            "30 rows, coverage 0.8667.") in md
    assert "- Abstain on: agreement\n- Threshold: 0.5000\n- Abstained rows: 4 of 30\n- Coverage: 0.8667\n\n" in md
    assert "accuracy" not in md.lower()


def test_close_thresholds_get_the_digits_that_keep_them_apart():
    report = full_report()
    # float32 confidences, as the vote makes them, that agree to 6 decimals
    low, high, far = (float(np.float32(x)) for x in (0.3739001, 0.37390048, 0.52))
    report["abstention"].update(threshold=high, curve=[
        {"threshold": low, "coverage": 0.9, "accuracy": 0.8},
        {"threshold": high, "coverage": 0.8, "accuracy": 0.85},
        {"threshold": far, "coverage": 0.5, "accuracy": 0.9}])
    md = markdown(report)
    assert "| 0.3739001 | 0.9000 | 0.8000 |\n| 0.3739005 | 0.8000 | 0.8500 |\n| 0.5200000 | 0.5000 | 0.9000 |" in md
    assert "- Threshold: 0.3739005\n" in md and "below 0.3739005)" in md
    assert "0.3739 " not in md and "0.3739 |" not in md
    # Well-separated thresholds keep 4 decimals (see the full report's own test).
    assert "| 0.5000 | 0.9000 | 0.8889 |" in markdown(full_report())


def test_skipped_rows_only_when_rows_were_skipped():
    report = full_report()
    report["data"]["skipped_rows"] = {"train": 0, "valid": 0, "test": 0}  # on_bad_rows = "error"
    md = markdown(report)
    data = md.split("## Data\n\n")[1].split("\n## ")[0]
    assert data.startswith("Texts longer than the member's max_length")
    assert "skipped" not in md and "on_bad_rows" not in md
    assert "skipped" not in html(report)
    report["data"]["on_bad_rows"] = "skip"  # asked for (when recorded), and none was bad: say so
    assert "Rows skipped as bad (on_bad_rows = \"skip\"):\n\n| split | rows skipped |\n| --- | ---: |\n| train | 0 |" in markdown(report)


@pytest.mark.parametrize(("split", "valid_eval", "columns", "electra"), [
    ("test", 2, "| train | valid | test |", "| 13 | 2 | 2 |"),
    # the report is on valid: its count is the members' own valid count, shown once
    ("valid", 2, "| train | valid |", "| 13 | 2 |"),
    ("valid", 5, "| train | valid | valid (this report) |", "| 13 | 2 | 5 |"),
    ("reviews.csv", 1, "| train | valid | reviews.csv |", "| 13 | 2 | 1 |"),  # ensemble vote --data
])
def test_truncation_table_uses_the_reports_split_name(split, valid_eval, columns, electra):
    report = full_report()
    report["split"] = split
    report["data"]["truncated"]["electra"]["eval"] = valid_eval
    md = markdown(report)
    assert f"| model | max length {columns}" in md and f"| electra | 256 {electra}" in md
    assert "eval" not in md.split("## Data")[1]


def test_disputed_says_none_when_every_member_agreed():
    logits = np.repeat(np.random.default_rng(3).normal(size=(1, ROWS, len(LABELS))), 3, axis=0)
    report = build_report(names=NAMES, labels=LABELS, vote=aggregate(logits, "soft"), method="soft",
                          weights={n: 1 / 3 for n in NAMES}, y_true=None, texts=["t"] * ROWS,
                          pairs=None, split="test")
    assert report["disputed"] == [] and report["agreement"]["unanimous"] == 1.0
    md = markdown(report)
    assert md.endswith("## Disputed examples\n\nnone: every member agreed on every row\n")
    assert "<h2>Disputed examples</h2>\n<p>none: every member agreed on every row</p>" in html(report)
    # An older report.json listed unanimous rows anyway: they are left out of the table.
    old = base_report()
    unanimous = {**old["disputed"][0], "row": 99, "members": {n: "neutral" for n in NAMES}}
    old["disputed"].append(unanimous)
    section = markdown(old).split("## Disputed examples")[1]
    assert "| 99 |" not in section and len(section.strip().splitlines()) == 4 + len(old["disputed"]) - 1
    old["disputed"] = [unanimous]
    assert markdown(old).endswith("## Disputed examples\n\nnone: every member agreed on every row\n")


def test_members_left_out_of_the_vote_are_listed_with_why():
    report = full_report()
    assert "left out of the vote" not in markdown(report)
    report["data"]["failed_members"] = {"electra": "members[electra]: training loss became nan at epoch 1, batch 3"}
    md = markdown(report)
    data = md.split("## Data\n\n")[1]
    assert data.startswith("Members left out of the vote: their training loss diverged (on_diverge = \"skip\"):\n\n"
                           "| model | why |\n| --- | --- |\n| electra | members\\[electra\\]: training loss became nan at epoch 1, batch 3 |")
    assert "left out of the vote" in html(report) and "training loss became nan" in html(report)


def test_stacking_shows_what_the_stacker_relies_on_and_no_voting_weights():
    report = full_report()
    report["method"] = "stacking"
    report["combining"] = {"method": "stacking", "fitted_on": "valid", "valid_rows": 50,
                           "valid": {"accuracy": 0.9}, "valid_scored": "out-of-fold (cross-fitted)",
                           "reliance": {"albert": 0.75, "electra": 0.25}}
    md = markdown(report)
    section = md.split("## Combining")[1].split("\n## ")[0]
    assert "- Validation accuracy (out-of-fold (cross-fitted)): 0.9000" in section
    assert "| model | reliance |\n| --- | ---: |\n| albert | 0.7500 |\n| electra | 0.2500 |" in section
    metrics = md.split("## Metrics")[1].split("\n## ")[0]
    assert metrics.strip().startswith("| model | accuracy |")  # no weight column: the stacker combines, not weights
    assert "Method: stacking (a logistic regression over the members' log-probabilities)" in md
    assert "inverse L2 strength" not in md  # reports from before C was chosen: nothing said
    report["combining"]["stacker_c"] = 0.1
    assert "- Stacker's inverse L2 strength C: 0.1 (chosen by the lowest out-of-fold log-loss)" in markdown(report)
    calibration = md.split("## Calibration")[1].split("\n## ")[0]
    assert "| soft average of the members |" in calibration and "**ensemble**" not in calibration
    assert "The stacker's own NLL and ECE are the ensemble's in the metrics table" in calibration


def test_labels_without_gold_rows_are_named_under_the_metrics():
    report = full_report()
    assert "no gold row" not in markdown(report)
    labels = report["labels"]
    report["ensemble"]["confusion"] = [[0] * len(labels)] + report["ensemble"]["confusion"][1:]
    md = markdown(report)
    assert (f"Macro averages are over all {len(labels)} labels the members know; '{labels[0]}' has no gold row in "
            "this split and counts as 0 there, so that scores stay comparable across splits.") in md


def test_valid_and_test_rows_seen_in_training_are_a_warning_in_the_data_section():
    report = full_report()
    report["data"]["seen_in_train"] = {"valid": 50, "test": 1}
    data = markdown(report).split("## Data\n\n")[1].split("\n## ")[0]
    assert ("Warning: 50 valid rows and 1 test row have the same text as a training row (duplicates in the data): "
            "scores on them are optimistic") in data
    assert "Warning" not in markdown(full_report())


# --------------------------------------------------------------------------- what a reader could misread


def test_a_hard_votes_vote_share_is_not_shown_as_a_mean_probability():
    report = full_report()
    report["method"] = "hard"
    del report["ensemble"]["nll"], report["ensemble"]["ece"]
    md = markdown(report)
    ensemble_row = next(line for line in md.splitlines() if line.startswith("| **ensemble (all rows"))
    cells = [cell.strip() for cell in ensemble_row.split("|")[1:-1]]
    assert cells[-3:] == ["", "", ""]  # mean confidence, NLL, ECE: none for a vote share
    share = f"{report['ensemble']['mean_agreement']:.4f}"
    assert f"the share of member weight behind its label (mean {share})" in md
    assert "abstains when confidence (a hard vote's: the share of member weight behind its label) is below" in md
    assert "- Abstain on: confidence (a hard vote's" in md
    # The calibration table's last row is the members' plain average: no temperature was fitted for it.
    report["calibration"]["ensemble_temperature"] = 1.0
    last = [line for line in markdown(report).split("## Calibration")[1].splitlines() if line.startswith("| soft")]
    assert last and last[0].startswith("| soft average of the members |  |")


def test_one_member_gets_no_agreement_statistics_to_misread():
    md = markdown(base_report(members=1))
    for absent in ("Pairwise agreement", "Cohen's kappa", "Fleiss' kappa", "Unanimous rows", "Oracle accuracy"):
        assert absent not in md
    assert "Pairwise agreement" in markdown(base_report(members=2))


def test_members_left_out_are_named_in_the_header_not_only_under_data():
    report = full_report()
    report["data"]["failed_members"] = {"bert": "members[bert]: training loss became nan at epoch 1, batch 3"}
    header = markdown(report).split("## Metrics")[0]
    assert "- Members: 3 vote; left out: bert (training diverged; see Data)" in header


def test_disputed_rows_that_abstained_read_as_predictions_csv_has_them():
    report = full_report()
    report["disputed"][0]["abstained"] = True
    report["disputed"][1]["abstained"] = False
    md = markdown(report)
    rows = md.split("## Disputed examples")[1]
    first, second = report["disputed"][0], report["disputed"][1]
    assert f"| abstain ({first['ensemble']}) |" in rows
    assert f"| {second['ensemble']} | {second['confidence']:.4f} |" in rows
    assert "Rows: gold; columns: predicted, every row counted, before abstention." in md


def test_calibrated_member_scores_say_so_and_ece_is_defined():
    md = markdown(full_report())
    assert "| NLL (calibrated) | ECE (calibrated) |" in md
    assert "ECE: expected calibration error over 15 equal-width bins of the top probability" in md
    assert "The members' are after their temperature scaling (see Calibration)." in md
    report = full_report()
    del report["calibration"]
    assert "| NLL | ECE |" in markdown(report) and "after their temperature" not in markdown(report)
    stacked = {**full_report(), "method": "stacking"}  # the stacker's outputs have no temperature of their own
    assert ("(see Calibration); the ensemble's are the stacker's probabilities as it gives them." in markdown(stacked))


def test_training_table_numbers_in_one_notation_each():
    report = full_report()
    for epochs in report["training"].values():
        for i, epoch in enumerate(epochs):
            epoch.update(lr=[5.29e-07, 0.000199, 7.17e-05][i], seconds=30.7034, samples_per_s=536.3494)
    md = markdown(report)
    assert "| epoch seconds | lr (its last step) | samples/s |" in md
    assert "| 30.7 | 7.17e-05 | 536.3 |" in md and "| 30.7 | 1.99e-04 | 536.3 |" in md


def test_no_negative_zero():
    assert render_module._num(-0.0) == "0.0000" and render_module._num(-0.00001) == "0.0000"
    assert render_module._num(-0.5) == "-0.5000"


def test_a_threshold_chosen_on_rows_the_vote_was_fitted_on_says_so():
    report = full_report()
    report["abstention"]["chosen"] = {"target": "coverage", "value": 0.8, "valid_coverage": 0.8, "valid_accuracy": 1.0}
    line = ("Chosen on the validation rows for coverage \\>= 0.8000: there it answered 0.8000 of the rows at accuracy "
            "1.0000")
    assert line + "\n" in markdown(report)  # nothing recorded as fitted (a plain soft vote): nothing said
    # a stacker's validation score is out-of-fold, but its threshold is chosen on its in-sample confidence
    report["combining"]["valid_scored"] = "out-of-fold (cross-fitted)"
    report["abstention"]["chosen"]["scored"] = "in-sample: the vote was fitted on these rows"
    assert line + " (in-sample: the vote was fitted on these rows, so optimistic)" in markdown(report)


def test_vote_skipped_rows_are_headed_by_the_flag():
    report = full_report()
    report["data"]["skipped_rows"] = {"--data": 2, "--valid": 0}
    assert "Rows skipped as bad (--on-bad-rows skip):\n\n| split | rows skipped |\n| --- | ---: |\n| --data | 2 |" in markdown(report)


def test_a_confusion_table_of_many_labels_numbers_its_columns():
    from ensemble.aggregate import aggregate as vote_of

    labels = [f"label_{i}" for i in range(12)]
    y = np.arange(24) % 12
    logits = np.eye(12)[None, y] * 3.0
    report = build_report(names=["a"], labels=labels, vote=vote_of(logits, "soft"), method="soft",
                          weights={"a": 1.0}, y_true=y, texts=[str(i) for i in range(24)], pairs=None, split="test")
    section = markdown(report).split("## Ensemble confusion matrix")[1].split("\n## ")[0]
    assert "Rows: gold; columns: predicted, numbered as the rows." in section
    assert "| gold \\ predicted | 1 | 2 | 3 |" in section.replace("`", "")
    assert "| 12. label_11 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 2 |" in section
    few = markdown(base_report()).split("## Ensemble confusion matrix")[1].split("\n## ")[0]
    assert "numbered" not in few
