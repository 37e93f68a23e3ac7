"""Render a report dict (report.json) as report.md and report.html: what each section says.

Both pages come from one list of sections built from the report alone, so they always say the
same thing and can be regenerated from a saved report.json. Optional keys (``calibration``,
``combining``, ``abstention``, ``training``, ``data``, NLL/ECE in the metrics) get a section
when present; older reports without them render as before. A ``warning`` (scores measured on
the rows the vote was fitted on) opens both pages. Text from the data (row texts,
labels, member names) is escaped on the way out: markdown table syntax in report.md, HTML in
report.html, which has no scripts and loads nothing but the plot PNGs beside it.
"""

from __future__ import annotations

from typing import Any

from .errors import rows_phrase
from .markup import PAGE, Caveat, Image, Inline, Span, Table, html_block, html_inline, md_block, md_inline

__all__ = ["html", "markdown"]

_TEXT_WIDTH = 80  # characters of a row's text shown in the disputed table
_METRICS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "macro_precision": "macro precision",
            "macro_recall": "macro recall"}
_NAMES = {"accuracy": "accuracy", "nll": "NLL", "ece": "ECE", "train_loss": "train loss",
          "valid_loss": "valid loss", "macro_f1": "macro-F1"}
_METHODS = {"soft": "soft vote (mean probability)", "hard": "hard vote (majority of labels)",
            "weighted": "weighted soft vote (weights learned on validation)",
            "selection": "ensemble selection (members picked on validation)",
            "stacking": "stacking (a logistic regression over the members' log-probabilities)"}
_PLOTS = {"confusion": "Confusion matrices", "agreement": "Pairwise agreement heatmap",
          "training": "Training curves", "coverage": "Accuracy against coverage"}


def markdown(report: dict, plots: dict[str, str] | None = None) -> str:
    """report.md: the report as markdown tables, linking the ``plots`` PNGs when given.

    Example:
        >>> md = markdown({"split": "test", "rows": 2, "method": "soft", "weights": {"a": 1.0},
        ...     "labels": ["neg", "pos"], "members": {"a": {"mean_confidence": 0.9}},
        ...     "ensemble": {"mean_confidence": 0.9}, "disputed": []})
        >>> print(md.splitlines()[0]); print(md.splitlines()[-1])
        # Ensemble report: test
        | **ensemble** |  | 0.9000 |
    """
    title, sections = _document(report, plots or {})
    out = [f"# {md_inline(title)}"]
    for heading, blocks in sections:
        out += [f"## {md_inline(heading)}"] if heading else []
        out += [md_block(block) for block in blocks]
    return "\n\n".join(out) + "\n"


def html(report: dict, plots: dict[str, str] | None = None) -> str:
    """report.html: one page with inline CSS, the tables and ``<img>`` tags for the ``plots``.

    No scripts and no outside resources; every text from the report is HTML-escaped.

    Example:
        >>> page = html({"split": "<b>test</b>", "rows": 0, "method": "soft", "weights": {},
        ...     "labels": [], "members": {}, "ensemble": {}, "disputed": []})
        >>> "<h1>Ensemble report: &lt;b&gt;test&lt;/b&gt;</h1>" in page
        True
    """
    title, sections = _document(report, plots or {})
    body = [f"<h1>{html_inline(title)}</h1>"]
    for heading, blocks in sections:
        body += [f"<h2>{html_inline(heading)}</h2>"] if heading else []
        body += [html_block(block) for block in blocks]
    return PAGE.format(title=html_inline(title), body="\n".join(body))


# --------------------------------------------------------------------------- the sections


def _document(report: dict, plots: dict[str, str]) -> tuple[str, list[tuple[str, list]]]:
    """The page title and its (heading, blocks) sections; the first section has no heading."""
    names = [str(name) for name in report["members"]]
    labels = [str(label) for label in report["labels"]]
    ensemble = report["ensemble"]
    has_gold = "accuracy" in ensemble
    shown: set[str] = set()

    def image(key: str) -> list[Image]:
        if key not in plots:
            return []
        shown.add(key)
        return [Image(_PLOTS.get(key, key), plots[key])]

    warning = _warning(report)
    header: list = [("Split: ", Span(str(report["split"]), "code")), (f"Rows: {report['rows']}",),
                    (f"Method: {_METHODS.get(report['method'], report['method'])}",), _labels_line(labels)]
    failed = (report.get("data") or {}).get("failed_members")
    if isinstance(failed, dict) and failed:  # the recipe listed them: say at once that they do not vote
        header.append((f"Members: {len(names)} vote; left out: {', '.join(map(str, failed))} (training diverged; "
                       "see Data)",))
    sections: list[tuple[str, list]] = [("", [Caveat(warning)] * bool(warning) + [header])]
    sections.append(("Metrics", _metrics(report, names, has_gold)))
    agreement = report.get("agreement")
    if agreement and len(names) > 1:  # one member has no one to agree with
        notes = {"pairwise": "Share of rows where two members predict the same.",
                 "cohen_kappa": "Agreement between two members beyond chance."}
        for heading, key in (("Pairwise agreement", "pairwise"), ("Cohen's kappa", "cohen_kappa")):
            matrix = [[a] + [_num(agreement[key][a][b]) for b in names] for a in names]
            sections.append((heading, [(notes[key],), Table(["", *names], matrix)]))
        sections[-2][1].extend(image("agreement"))
        sections[-1][1].extend([(f"Fleiss' kappa (all members): {_num(agreement['fleiss_kappa'])}",),
                                (f"Unanimous rows: {_num(agreement['unanimous'])}",)])
    if has_gold:
        # many or long labels as column headers make a table pages wide for one- or two-digit cells:
        # the columns are then numbered, and the rows give each number its label
        numbered = len(labels) > 10 or sum(len(str(label)) for label in labels) > 120
        rows = [f"{i + 1}. {label}" if numbered else label for i, label in enumerate(labels)]
        matrix = [[rows[i]] + [str(n) for n in row] for i, row in enumerate(ensemble["confusion"])]
        sections.append(("Ensemble confusion matrix", [
            ("Rows: gold; columns: predicted" + (", numbered as the rows" if numbered else "")
             + (", every row counted, before abstention." if _abstaining(report) else "."),),
            Table([Span("gold \\ predicted", "literal"), *([str(i + 1) for i in range(len(labels))] if numbered
                                                               else labels)], matrix), *image("confusion"),
        ]))
    for heading, build in (("Calibration", _calibration), ("Combining", _combining),
                           ("Abstention", _abstention), ("Training", _training), ("Data", _data)):
        blocks = build(report.get(heading.lower()), report, names)
        if blocks:
            key = {"Abstention": "coverage", "Training": "training"}.get(heading, "")
            sections.append((heading, blocks + image(key)))
    disputed = _disputed(report, names, has_gold)
    if disputed:
        sections.append(("Disputed examples", disputed))
    extra = [Image(_PLOTS.get(k, k), src) for k, src in plots.items() if k not in shown]
    sections += [("Plots", extra)] if extra else []
    return f"Ensemble report: {report['split']}", sections


def _metrics(report: dict, names: list[str], has_gold: bool) -> list:
    entries = [*(report["members"][n] for n in names), report["ensemble"]]
    metrics = dict(_METRICS) if has_gold else {}
    metrics["mean_confidence"] = "mean confidence"
    # NLL and ECE come with newer reports only; a column appears when anyone has the number.
    metrics.update({k: _NAMES[k] for k in ("nll", "ece") if any(k in e for e in entries)})
    calibrated = isinstance(report.get("calibration"), dict)  # the members' scores are after their temperatures
    headers = [f"{name} (calibrated)" if calibrated and k in ("nll", "ece") else name for k, name in metrics.items()]
    stacked = report.get("method") == "stacking"  # the stacker, not these weights, combines the members
    hard = report.get("method") == "hard"
    # no weight column under stacking: the stacker, not weights, combines the members
    rows = [[name] + ([] if stacked else [_num(report["weights"].get(name))]) + [_num(e.get(k)) for k in metrics]
            for name, e in zip(names, entries)]
    abstention = report.get("abstention")
    abstaining = _abstaining(report)
    # With abstention on, the row's numbers still count every row: say so where they are read.
    label = "ensemble (all rows, before abstention)" if abstaining else "ensemble"
    # A hard vote's confidence is a vote share, not a probability: not in a column of probabilities.
    rows.append([Span(label, "strong")] + ([] if stacked else [""])
                + ["" if hard and k == "mean_confidence" else _num(entries[-1].get(k)) for k in metrics])
    blocks: list = [Table(["model", *([] if stacked else ["weight"]), *headers], rows)]
    if hard:
        blocks.append(("A hard vote gives labels, not probabilities: its confidence is the share of member weight "
                       f"behind its label (mean {_num(entries[-1].get('mean_agreement'))}), so it has no mean "
                       "confidence, NLL or ECE to set beside the members'.",))
    if "ece" in metrics:
        blocks.append(("NLL: negative log-likelihood of the gold label; ECE: expected calibration error over 15 "
                       "equal-width bins of the top probability; lower is better for both"
                       + (". The members' are after their temperature scaling (see Calibration)"
                          + ("; the ensemble's are the stacker's probabilities as it gives them." if stacked else ".")
                          if calibrated else "."),))
    if abstaining:
        blocks.append(_after_abstention(abstention, report))
    confusion = report["ensemble"].get("confusion") if has_gold else None
    absent = [str(report["labels"][i]) for i, row in enumerate(confusion or []) if not sum(row)]
    if absent:  # macro averages count them as 0: say so where the numbers are read
        listed = ", ".join(f"'{a}'" for a in absent)
        blocks.append((f"Macro averages are over all {len(report['labels'])} labels the members know; {listed} "
                       f"{'has' if len(absent) == 1 else 'have'} no gold row in this split and "
                       f"count{'s' if len(absent) == 1 else ''} as 0 there, so that scores stay comparable across "
                       "splits.",))
    blocks += _per_label(report, names)
    if "oracle_accuracy" in report and len(names) > 1:
        blocks.append((f"Oracle accuracy (some member right): {_num(report['oracle_accuracy'])}",))
    return blocks


def _per_label(report: dict, names: list[str]) -> list:
    """Each label's precision, recall and F1 for the ensemble and its F1 for every member."""
    scores = report["ensemble"].get("per_label")
    if not isinstance(scores, dict):
        return []
    labels = [str(label) for label in report["labels"]]
    members = [(n, (report["members"][n].get("per_label") or {}).get("f1")) for n in names]
    members = [(n, f1) for n, f1 in members if isinstance(f1, list) and len(f1) == len(labels)]
    rows = []
    for i, label in enumerate(labels):
        row: list[Inline] = [label, _value((scores.get("support") or [None] * len(labels))[i])]
        row += [_num((scores.get(k) or [None] * len(labels))[i]) for k in ("precision", "recall", "f1")]
        rows.append(row + [_num(f1[i]) for _, f1 in members])
    columns = ["label", "gold rows", "ensemble precision", "ensemble recall", "ensemble F1", *(f"F1 {n}" for n, _ in members)]
    return [("Per label (a binary task's usual score is its positive label's F1):",), Table(columns, rows)]


def _abstaining(report: dict) -> bool:
    abstention = report.get("abstention")
    return isinstance(abstention, dict) and abstention.get("threshold") is not None


def _on(section: dict, report: dict) -> str:
    """What abstention reads; a hard vote's confidence is its vote share, and said so."""
    on = str(section.get("on", "?"))
    return "confidence (a hard vote's: the share of member weight behind its label)" if (
        on == "confidence" and report.get("method") == "hard") else on


def _after_abstention(section: dict, report: dict) -> tuple:
    """The ensemble's outcome once rows below the threshold abstain: coverage, accuracy answered."""
    threshold = _num(section.get("threshold"), _threshold_decimals(section))
    answered = report["rows"] - section["abstained"] if _is_int(section.get("abstained")) else "?"
    line: tuple = (Span("Ensemble after abstention", "strong"),
                   f" (abstains when {_on(section, report)} is below {threshold}): answers {answered} "
                   f"of {report['rows']} rows, coverage {_num(section.get('coverage'))}")
    if "accuracy_answered" in section:  # absent without gold labels
        line += (f"; accuracy on the answered rows: {_answered_accuracy(section)}",)
    return line + (".",)


def _answered_accuracy(section: dict) -> str:
    accuracy = section.get("accuracy_answered")
    return "undefined (no row answered)" if accuracy is None else _num(accuracy)


def _warning(report: dict) -> str:
    """The report's warning; older reports kept it in ``combining`` only."""
    warning = report.get("warning")
    if not warning and isinstance(report.get("combining"), dict):
        warning = report["combining"].get("warning")
    return str(warning) if warning else ""


def _calibration(section: Any, report: dict, names: list[str]) -> list:
    if not isinstance(section, dict):
        return []
    temperatures = section.get("temperatures") or {}
    keys = ("nll_before", "nll_after", "ece_before", "ece_after")
    entries = [(n, (section.get("members") or {}).get(n), temperatures.get(n)) for n in names]
    # the ensemble's own temperature rescales the soft vote's probabilities after the members'; a
    # stacker's probabilities are its own (in the metrics table): this row is then the plain average
    method = report.get("method")
    stacked = method == "stacking"
    label = "soft average of the members" if method in ("stacking", "hard") else Span("ensemble", "strong")
    # only a soft vote fits a temperature of its own; for the others the row's 1.0 was never fitted
    entries.append((label, section.get("ensemble"), None if method in ("stacking", "hard")
                    else section.get("ensemble_temperature")))
    rows = [[name, _num(temperature)] + [_num((scores or {}).get(k)) for k in keys]
            for name, scores, temperature in entries if scores or temperature is not None]
    columns = ["model", "temperature", "NLL before", "NLL after", "ECE before", "ECE after"]
    note = ("Temperatures fitted on ", Span(str(section.get("fitted_on", "?")), "code"),
            "; lower NLL (negative log-likelihood) and ECE (expected calibration error) are better.")
    if stacked:
        note += (" The stacker's own NLL and ECE are the ensemble's in the metrics table; the last row is the "
                 "members' plain weighted average, before and after their temperatures.",)
    elif method == "hard":
        note += (" A hard vote gives labels, not probabilities; the last row is the members' plain weighted "
                 "average, before and after their temperatures.",)
    return [note, Table(columns, rows)] if rows else [note]


def _combining(section: Any, report: dict, names: list[str]) -> list:
    if not isinstance(section, dict):
        return []
    fitted = ("Fitted on: ", Span(str(section.get("fitted_on", "?")), "code"))
    if section.get("valid_rows") is not None:
        fitted += (f" ({section['valid_rows']} rows)",)
    items = [(f"Method: {section.get('method', '?')}",), fitted]
    scored = f" ({section['valid_scored']})" if section.get("valid_scored") else ""
    items += [(f"Validation {_NAMES.get(k, k)}{scored}: {_num(v)}",)
              for k, v in (section.get("valid") or {}).items()]
    if _is_number(section.get("stacker_c")):
        items.append((f"Stacker's inverse L2 strength C: {section['stacker_c']:g} (chosen by the lowest out-of-fold "
                      "log-loss)",))
    blocks: list = [items]
    reliance = section.get("reliance")
    if isinstance(reliance, dict) and reliance:
        blocks += [("How much the stacker uses each member (its share of the coefficients' norm on that member's "
                    "standardized log-probabilities):",), Table(["model", "reliance"], [[n, _num(v)] for n, v in reliance.items()])]
    weights, picks = section.get("weights"), section.get("picks")
    if weights or picks:
        listed = dict.fromkeys([*names, *(weights or {}), *(picks or {})])
        rows = []
        for name in listed:
            row: list[Inline] = [name]
            row += [_num(weights.get(name))] if weights else []
            row += [str(picks.get(name, 0))] if picks else []  # never picked: 0
            rows.append(row)
        columns = ["model"] + ["weight"] * bool(weights) + ["picks"] * bool(picks)
        blocks.append(Table(columns, rows))
    return blocks


def _abstention(section: Any, report: dict, names: list[str]) -> list:
    if not isinstance(section, dict):
        return []
    threshold = section.get("threshold")
    curve = _curve(section)
    decimals = _threshold_decimals(section)
    items = [(f"Abstain on: {_on(section, report)}",),
             (f"Threshold: {'none (every row answered)' if threshold is None else _num(threshold, decimals)}",),
             *_chosen(section.get("chosen")),
             (f"Abstained rows: {section.get('abstained', '?')} of {report['rows']}",),
             (f"Coverage: {_num(section.get('coverage'))}",)]
    if "accuracy_answered" in section:  # absent without gold labels
        items.append((f"Accuracy on answered rows: {_answered_accuracy(section)}",))
    blocks: list = [items]
    if curve:
        rows = [[_num(p.get("threshold"), decimals), _num(p.get("coverage")), _num(p.get("accuracy"))]
                for p in curve]
        blocks += [("Accuracy on the answered rows at each threshold:",),
                   Table(["threshold", "coverage", "accuracy"], rows, [True] * 3)]
    return blocks


def _curve(section: dict) -> list[dict]:
    return [point for point in section.get("curve") or [] if isinstance(point, dict)]


def _threshold_decimals(section: dict) -> int:
    """Thresholds get as many decimals as keep distinct ones distinct (4 at least), the chosen
    one included, so no two curve rows read the same and the chosen one can be found among them."""
    return _decimals([section.get("threshold"), *(p.get("threshold") for p in _curve(section))])


def _chosen(chosen: Any) -> list[tuple[str]]:
    """How validation picked the threshold, when the recipe gave a coverage or accuracy target,
    and whether the vote was fitted on those same rows (then what it got there is optimistic)."""
    if not isinstance(chosen, dict):
        return []
    scored = chosen.get("scored")
    fitted = f" ({scored}, so optimistic)" if isinstance(scored, str) and scored.startswith("in-sample") else ""
    return [(f"Chosen on the validation rows for {chosen.get('target', '?')} >= {_num(chosen.get('value'))}: "
             f"there it answered {_num(chosen.get('valid_coverage'))} of the rows at accuracy "
             f"{_num(chosen.get('valid_accuracy'))}{fitted}",)]


def _training(section: Any, report: dict, names: list[str]) -> list:
    if not isinstance(section, dict):
        return []
    histories = {str(n): [e for e in epochs if isinstance(e, dict)] for n, epochs in section.items()
                 if isinstance(epochs, list)}
    # the kept epoch (its weights are the member's, the ones that vote), else the last
    final = {n: next((e for e in epochs if e.get("kept") is True), epochs[-1])
             for n, epochs in histories.items() if epochs}
    if not final:
        return []
    keys = ["epoch"] + [k for k in ("train_loss", "valid_loss", "accuracy")
                        if any(k in e for e in final.values())]
    for entry in final.values():  # then any further numbers, in the order first seen
        keys += [k for k, v in entry.items() if k not in keys and k != "kept" and _is_number(v)]
    rows = [[name, str(len(histories[name]))] + [_epoch_value(k, entry.get(k)) for k in keys]
            for name, entry in final.items()]
    names_here = {**_NAMES, "accuracy": "valid accuracy", "epoch": "kept epoch",  # per-epoch accuracy is on valid
                  "lr": "lr (its last step)", "seconds": "epoch seconds", "samples_per_s": "samples/s"}
    columns = ["model", "epochs trained"] + [names_here.get(k, k.replace("_", " ")) for k in keys]
    return [("Each member's kept epoch: the one whose weights vote (its best by the recipe's best_metric; "
             "the last epoch where none is recorded).",), Table(columns, rows)]


def _epoch_value(key: str, value: Any) -> str:
    """One cell of the training table: learning rates in one notation, times to what they mean."""
    if _is_number(value) and key == "lr":
        return f"{value:.2e}"
    if _is_number(value) and key in ("seconds", "samples_per_s"):
        return f"{value:.1f}"
    return _value(value)


def _data(section: Any, report: dict, names: list[str]) -> list:
    if not isinstance(section, dict):
        return []
    blocks: list = []
    failed = section.get("failed_members") or {}
    if isinstance(failed, dict) and failed:
        blocks += [("Members left out of the vote: their training loss diverged (on_diverge = \"skip\"):",),
                   Table(["model", "why"], [[name, str(why)] for name, why in failed.items()], [False, False])]
    skipped = section.get("skipped_rows") or {}
    # Under the default on_bad_rows = "error" nothing is ever skipped (a bad row stops the run):
    # the table only when a row was skipped, or the recipe (when recorded) said "skip".
    if skipped and (section.get("on_bad_rows") == "skip" or _any_skipped(skipped)):
        flags = any(str(k).startswith("--") for k in skipped)  # vote's files, by their flags
        blocks += [("Rows skipped as bad (--on-bad-rows skip):" if flags else "Rows skipped as bad (on_bad_rows = \"skip\"):",),
                   Table(["split", "rows skipped"], [[k, str(v)] for k, v in skipped.items()])]
    seen = section.get("seen_in_train") or {}
    if isinstance(seen, dict) and seen:
        listed = " and ".join(f"{_value(n)} {split} row{'s' if n != 1 else ''}" for split, n in seen.items())
        verb = "has" if sum(v for v in seen.values() if _is_number(v)) == 1 else "have"
        blocks += [(f"Warning: {listed} {verb} the same text as a training row (duplicates in the data): "
                    "scores on them are optimistic; deduplicate the files to score only unseen texts.",)]
    in_valid = section.get("seen_in_valid")
    for split, count in (in_valid.items() if isinstance(in_valid, dict) else ()):
        if _is_number(count) and count:
            blocks += [(f"Warning: {rows_phrase(count, split)} the same text as a validation row, on which the vote "
                        "(temperatures, weights, stacker, abstention) was fitted: the scores here are optimistic; "
                        "deduplicate the files.",)]
    truncated, lengths = section.get("truncated") or {}, section.get("max_length") or {}
    if truncated or lengths:
        splits = list(dict.fromkeys(s for counts in truncated.values() for s in counts))
        members = list(dict.fromkeys([*truncated, *lengths]))
        rows = [[name, _value(lengths.get(name))]
                + [_value((truncated.get(name) or {}).get(s)) for s in splits] for name in members]
        columns = [*splits]
        split = str(report.get("split", "eval"))
        if "eval" in splits and split != "eval":  # "eval" is this report's split: call it by its name
            at = splits.index("eval")
            same = [(truncated.get(n) or {}).get(split) == (truncated.get(n) or {}).get("eval") for n in members]
            if split in splits and all(same):
                # e.g. the report is on valid: the members' own valid counts, the same rows
                rows = [row[:2 + at] + row[3 + at:] for row in rows]
                del columns[at]
            else:
                columns[at] = split if split not in splits else f"{split} (this report)"
        blocks += [("Texts longer than the member's max_length (cut to fit), per split:",),
                   Table(["model", "max length", *columns], rows)]
    return blocks


def _disputed(report: dict, names: list[str], has_gold: bool) -> list:
    listed = [item for item in report.get("disputed") or [] if isinstance(item, dict)]
    # A row where every member gives the same label is not disputed (older reports listed such
    # rows when too few others were left).
    disputed = [item for item in listed if len(set(map(str, (item.get("members") or {}).values()))) > 1]
    if not disputed:
        agreement = report.get("agreement")
        unanimous = isinstance(agreement, dict) and agreement.get("unanimous") == 1.0
        if len(names) > 1 and (unanimous or listed):
            return [("none: every member agreed on every row",)]
        return []
    with_pairs = "text_pair" in disputed[0]
    columns: list[Inline] = ["row", "text"] + (["text pair"] if with_pairs else [])
    columns += ["gold"] if has_gold else []
    columns += ["ensemble", "confidence", "agreement", *names]
    rows = []
    for item in disputed:
        row: list[Inline] = [str(item["row"]), Span(str(item["text"]), width=_TEXT_WIDTH)]
        if with_pairs:
            row.append(Span(str(item["text_pair"]), width=_TEXT_WIDTH))
        if has_gold:
            row.append(str(item["gold"]))
        # as predictions.csv has it: "abstain", with the label the vote would have given
        chosen = f"abstain ({item['ensemble']})" if item.get("abstained") else str(item["ensemble"])
        row += [chosen, _num(item.get("confidence")), _num(item["agreement"])]
        rows.append(row + [str(item["members"][n]) for n in names])
    # Right-align the numbers: row, confidence, agreement.
    numeric = [True] + [False] * (len(columns) - len(names) - 3) + [True, True]
    skipping = _any_skipped((report.get("data") or {}).get("skipped_rows"))
    return [("Rows where the members disagree, deepest splits first (fewest members behind any one label), then "
             "lowest agreement with the ensemble. Row: the row of predictions.csv, counted from 0"
             + (" (the rows skipped as bad are not in it)." if skipping else "."),),
            Table(columns, rows, numeric + [False] * len(names))]


# --------------------------------------------------------------------------- markdown


# --------------------------------------------------------------------------- helpers


def _num(value: Any, decimals: int = 4) -> str:
    """A number with 4 decimals, None as an empty cell, anything else (hand-edited?) as text."""
    if value is None:
        return ""
    if not _is_number(value):
        return str(value)
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text  # no "-0.0000"


def _decimals(values: list[Any]) -> int:
    """The fewest decimals (4 at least) at which the distinct numbers among `values` all differ.

    Example:
        >>> _decimals([0.37390012, 0.3739, None, 0.5]), _decimals([0.25, 0.5])
        (7, 4)
    """
    numbers = {float(v) for v in values if _is_number(v)}
    for decimals in range(4, 18):
        if len({f"{v:.{decimals}f}" for v in numbers}) == len(numbers):
            return decimals
    return 17


def _any_skipped(skipped: Any) -> bool:
    """Whether a ``skipped_rows`` table counts some row."""
    return isinstance(skipped, dict) and any(_is_number(v) and v > 0 for v in skipped.values())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value(value: Any) -> str:
    """A count as is, any other number with 4 decimals (below 0.001, such as a learning rate,
    3 significant digits instead of zeros), anything else as text.

    Example:
        >>> _value(3), _value(0.43219), _value(5e-05), _value(0.0), _value("x")
        ('3', '0.4322', '5e-05', '0.0000', 'x')
    """
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not _is_number(value):
        return str(value)
    return f"{value:.3g}" if value and abs(value) < 1e-3 else _num(value)


def _labels_line(labels: list[str]) -> tuple:
    """"Labels: `neg`, `pos`": each label a code span, so that a comma or markdown inside one
    cannot make it read as two."""
    items: list = ["Labels: "]
    for k, label in enumerate(labels):
        items += [", "] * bool(k) + [Span(str(label), "code")]
    return tuple(items)
