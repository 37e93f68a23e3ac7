"""Render a report dict (report.json) as report.md and report.html.

Both pages come from one list of sections built from the report alone, so they always say the
same thing and can be regenerated from a saved report.json. Optional keys (``calibration``,
``combining``, ``abstention``, ``training``, ``data``, NLL/ECE in the metrics) get a section
when present; older reports without them render as before. A ``warning`` (scores measured on
the rows the vote was fitted on) opens both pages. Text from the data (row texts,
labels, member names) is escaped on the way out: markdown table syntax in report.md, HTML in
report.html, which has no scripts and loads nothing but the plot PNGs beside it.
"""

from __future__ import annotations

import html as _html
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["html", "markdown"]

_TEXT_WIDTH = 80  # characters of a row's text shown in the disputed table
_TOOLTIP_WIDTH = 2000  # characters of the full text kept in report.html's hover title
_METRICS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "macro_precision": "macro precision",
            "macro_recall": "macro recall"}
_NAMES = {"accuracy": "accuracy", "nll": "NLL", "ece": "ECE", "train_loss": "train loss",
          "valid_loss": "valid loss", "macro_f1": "macro-F1"}
_PLOTS = {"confusion": "Confusion matrices", "agreement": "Pairwise agreement heatmap",
          "training": "Training curves", "coverage": "Accuracy against coverage"}


@dataclass(frozen=True)
class _Span:
    """Inline text with a look; a bare ``str`` is plain text. All of it is escaped when shown."""

    text: str
    kind: str = "plain"  # "plain", "code", "strong", or "literal" (fixed markdown, not escaped)
    width: int | None = None  # shorten to this many characters (free text in a table)


_Inline = str | _Span


@dataclass(frozen=True)
class _Table:
    columns: list[_Inline]
    rows: list[list[_Inline]]
    numeric: list[bool] | None = None  # right-aligned columns; default: all but the first


@dataclass(frozen=True)
class _Image:
    alt: str
    src: str


@dataclass(frozen=True)
class _Warning:
    """A caveat the reader must not miss: a quote in report.md, a framed box in report.html."""

    text: str


_Block = tuple | list | _Table | _Image | _Warning  # tuple: a paragraph of inlines; list: bullet items


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
    out = [f"# {_md(title)}"]
    for heading, blocks in sections:
        out += [f"## {_md(heading)}"] if heading else []
        out += [_md_block(block) for block in blocks]
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
    body = [f"<h1>{_h(title)}</h1>"]
    for heading, blocks in sections:
        body += [f"<h2>{_h(heading)}</h2>"] if heading else []
        body += [_html_block(block) for block in blocks]
    return _PAGE.format(title=_h(title), body="\n".join(body))


# --------------------------------------------------------------------------- the sections


def _document(report: dict, plots: dict[str, str]) -> tuple[str, list[tuple[str, list]]]:
    """The page title and its (heading, blocks) sections; the first section has no heading."""
    names = [str(name) for name in report["members"]]
    labels = [str(label) for label in report["labels"]]
    ensemble = report["ensemble"]
    has_gold = "accuracy" in ensemble
    shown: set[str] = set()

    def image(key: str) -> list[_Image]:
        if key not in plots:
            return []
        shown.add(key)
        return [_Image(_PLOTS.get(key, key), plots[key])]

    warning = _warning(report)
    sections: list[tuple[str, list]] = [("", [_Warning(warning)] * bool(warning) + [[
        ("Split: ", _Span(str(report["split"]), "code")), (f"Rows: {report['rows']}",),
        (f"Method: {report['method']} voting",), (f"Labels: {', '.join(labels)}",),
    ]])]
    sections.append(("Metrics", _metrics(report, names, has_gold)))
    agreement = report.get("agreement")
    if agreement:
        notes = {"pairwise": "Share of rows where two members predict the same.",
                 "cohen_kappa": "Agreement between two members beyond chance."}
        for heading, key in (("Pairwise agreement", "pairwise"), ("Cohen's kappa", "cohen_kappa")):
            matrix = [[a] + [_num(agreement[key][a][b]) for b in names] for a in names]
            sections.append((heading, [(notes[key],), _Table(["", *names], matrix)]))
        sections[-2][1].extend(image("agreement"))
        sections[-1][1].extend([(f"Fleiss' kappa (all members): {_num(agreement['fleiss_kappa'])}",),
                                (f"Unanimous rows: {_num(agreement['unanimous'])}",)])
    if has_gold:
        matrix = [[labels[i]] + [str(n) for n in row] for i, row in enumerate(ensemble["confusion"])]
        sections.append(("Ensemble confusion matrix", [
            ("Rows: gold; columns: predicted.",),
            _Table([_Span("gold \\ predicted", "literal"), *labels], matrix), *image("confusion"),
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
    extra = [_Image(_PLOTS.get(k, k), src) for k, src in plots.items() if k not in shown]
    sections += [("Plots", extra)] if extra else []
    return f"Ensemble report: {report['split']}", sections


def _metrics(report: dict, names: list[str], has_gold: bool) -> list:
    entries = [*(report["members"][n] for n in names), report["ensemble"]]
    metrics = dict(_METRICS) if has_gold else {}
    metrics["mean_confidence"] = "mean confidence"
    # NLL and ECE come with newer reports only; a column appears when anyone has the number.
    metrics.update({k: _NAMES[k] for k in ("nll", "ece") if any(k in e for e in entries)})
    rows = [[name, _num(report["weights"].get(name))] + [_num(e.get(k)) for k in metrics]
            for name, e in zip(names, entries)]
    abstention = report.get("abstention")
    abstaining = isinstance(abstention, dict) and abstention.get("threshold") is not None
    # With abstention on, the row's numbers still count every row: say so where they are read.
    label = "ensemble (all rows, before abstention)" if abstaining else "ensemble"
    rows.append([_Span(label, "strong"), ""] + [_num(entries[-1].get(k)) for k in metrics])
    blocks: list = [_Table(["model", "weight", *metrics.values()], rows)]
    if abstaining:
        blocks.append(_after_abstention(abstention, report))
    if "oracle_accuracy" in report:
        blocks.append((f"Oracle accuracy (some member right): {_num(report['oracle_accuracy'])}",))
    return blocks


def _after_abstention(section: dict, report: dict) -> tuple:
    """The ensemble's outcome once rows below the threshold abstain: coverage, accuracy answered."""
    threshold = _num(section.get("threshold"), _threshold_decimals(section))
    answered = report["rows"] - section["abstained"] if _is_int(section.get("abstained")) else "?"
    line: tuple = (_Span("Ensemble after abstention", "strong"),
                   f" (abstains when {section.get('on', '?')} is below {threshold}): answers {answered} "
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
    # the ensemble's own temperature rescales the soft vote's probabilities after the members'
    entries.append((_Span("ensemble", "strong"), section.get("ensemble"), section.get("ensemble_temperature")))
    rows = [[name, _num(temperature)] + [_num((scores or {}).get(k)) for k in keys]
            for name, scores, temperature in entries if scores or temperature is not None]
    columns = ["model", "temperature", "NLL before", "NLL after", "ECE before", "ECE after"]
    note = ("Temperatures fitted on ", _Span(str(section.get("fitted_on", "?")), "code"),
            "; lower NLL (negative log-likelihood) and ECE (expected calibration error) are better.")
    return [note, _Table(columns, rows)] if rows else [note]


def _combining(section: Any, report: dict, names: list[str]) -> list:
    if not isinstance(section, dict):
        return []
    fitted = ("Fitted on: ", _Span(str(section.get("fitted_on", "?")), "code"))
    if section.get("valid_rows") is not None:
        fitted += (f" ({section['valid_rows']} rows)",)
    items = [(f"Method: {section.get('method', '?')}",), fitted]
    items += [(f"Validation {_NAMES.get(k, k)}: {_num(v)}",)
              for k, v in (section.get("valid") or {}).items()]
    blocks: list = [items]
    weights, picks = section.get("weights"), section.get("picks")
    if weights or picks:
        listed = dict.fromkeys([*names, *(weights or {}), *(picks or {})])
        rows = []
        for name in listed:
            row: list[_Inline] = [name]
            row += [_num(weights.get(name))] if weights else []
            row += [str(picks.get(name, 0))] if picks else []  # never picked: 0
            rows.append(row)
        columns = ["model"] + ["weight"] * bool(weights) + ["picks"] * bool(picks)
        blocks.append(_Table(columns, rows))
    return blocks


def _abstention(section: Any, report: dict, names: list[str]) -> list:
    if not isinstance(section, dict):
        return []
    threshold = section.get("threshold")
    curve = _curve(section)
    decimals = _threshold_decimals(section)
    items = [(f"Abstain on: {section.get('on', '?')}",),
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
                   _Table(["threshold", "coverage", "accuracy"], rows, [True] * 3)]
    return blocks


def _curve(section: dict) -> list[dict]:
    return [point for point in section.get("curve") or [] if isinstance(point, dict)]


def _threshold_decimals(section: dict) -> int:
    """Thresholds get as many decimals as keep distinct ones distinct (4 at least), the chosen
    one included, so no two curve rows read the same and the chosen one can be found among them."""
    return _decimals([section.get("threshold"), *(p.get("threshold") for p in _curve(section))])


def _chosen(chosen: Any) -> list[tuple[str]]:
    """How validation picked the threshold, when the recipe gave a coverage or accuracy target."""
    if not isinstance(chosen, dict):
        return []
    return [(f"Chosen on the validation rows for {chosen.get('target', '?')} >= {_num(chosen.get('value'))}: "
             f"there it answered {_num(chosen.get('valid_coverage'))} of the rows at accuracy "
             f"{_num(chosen.get('valid_accuracy'))}",)]


def _training(section: Any, report: dict, names: list[str]) -> list:
    if not isinstance(section, dict):
        return []
    final = {str(n): epochs[-1] for n, epochs in section.items()
             if isinstance(epochs, list) and epochs and isinstance(epochs[-1], dict)}
    if not final:
        return []
    keys = ["epoch"] + [k for k in ("train_loss", "valid_loss", "accuracy")
                        if any(k in e for e in final.values())]
    for entry in final.values():  # then any further numbers, in the order first seen
        keys += [k for k, v in entry.items() if k not in keys and _is_number(v)]
    rows = [[name] + [_value(entry.get(k)) for k in keys] for name, entry in final.items()]
    names_here = {**_NAMES, "accuracy": "valid accuracy"}  # per-epoch accuracy is on valid
    columns = ["model"] + [names_here.get(k, k.replace("_", " ")) for k in keys]
    return [("Each member's last epoch.",), _Table(columns, rows)]


def _data(section: Any, report: dict, names: list[str]) -> list:
    if not isinstance(section, dict):
        return []
    blocks: list = []
    failed = section.get("failed_members") or {}
    if isinstance(failed, dict) and failed:
        blocks += [("Members left out of the vote: their training loss diverged (on_diverge = \"skip\"):",),
                   _Table(["model", "why"], [[name, str(why)] for name, why in failed.items()])]
    skipped = section.get("skipped_rows") or {}
    # Under the default on_bad_rows = "error" nothing is ever skipped (a bad row stops the run):
    # the table only when a row was skipped, or the recipe (when recorded) said "skip".
    if skipped and (section.get("on_bad_rows") == "skip"
                    or any(_is_number(v) and v > 0 for v in skipped.values())):
        blocks += [("Rows skipped as bad (on_bad_rows = \"skip\"):",),
                   _Table(["split", "rows skipped"], [[k, str(v)] for k, v in skipped.items()])]
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
                   _Table(["model", "max length", *columns], rows)]
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
    columns: list[_Inline] = ["row", "text"] + (["text pair"] if with_pairs else [])
    columns += ["gold"] if has_gold else []
    columns += ["ensemble", "confidence", "agreement", *names]
    rows = []
    for item in disputed:
        row: list[_Inline] = [str(item["row"]), _Span(str(item["text"]), width=_TEXT_WIDTH)]
        if with_pairs:
            row.append(_Span(str(item["text_pair"]), width=_TEXT_WIDTH))
        if has_gold:
            row.append(str(item["gold"]))
        row += [str(item["ensemble"]), _num(item.get("confidence")), _num(item["agreement"])]
        rows.append(row + [str(item["members"][n]) for n in names])
    # Right-align the numbers: row, confidence, agreement.
    numeric = [True] + [False] * (len(columns) - len(names) - 3) + [True, True]
    return [("Rows where the members disagree, lowest member agreement first.",),
            _Table(columns, rows, numeric + [False] * len(names))]


# --------------------------------------------------------------------------- markdown


def _md_block(block: _Block) -> str:
    if isinstance(block, _Table):
        numeric = block.numeric or [False] + [True] * (len(block.columns) - 1)
        align = ["---:" if number else "---" for number in numeric]
        cells = [[_md(c).strip() for c in block.columns], align]
        cells += [[_md(c).strip() for c in row] for row in block.rows]
        return "\n".join(f"| {' | '.join(row)} |" for row in cells)
    if isinstance(block, _Image):
        return f"![{_md(block.alt)}]({block.src})"
    if isinstance(block, _Warning):
        return f"> **Warning:** {_md(block.text)}"
    if isinstance(block, list):
        return "\n".join(f"- {''.join(map(_md, item))}" for item in block)
    return "".join(map(_md, block))


def _md(inline: _Inline) -> str:
    """One line of markdown, safe inside a table cell."""
    span = inline if isinstance(inline, _Span) else _Span(str(inline))
    if span.kind == "literal":
        return span.text
    text = _flat(span)
    if span.kind == "code":
        fence = "``" if "`" in text else "`"  # a backtick inside needs a longer fence
        return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"
    # Escaped after shortening, so a cut never splits an escape. "\<" shows a "<" that no
    # markdown viewer takes for the start of an HTML tag.
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<")
    return f"**{text}**" if span.kind == "strong" else text


# --------------------------------------------------------------------------- html


def _html_block(block: _Block) -> str:
    if isinstance(block, _Table):
        numeric = block.numeric or [False] + [True] * (len(block.columns) - 1)

        def row(cells: list[_Inline], tag: str) -> str:
            opening = [f'<{tag} class="num">' if number else f"<{tag}>" for number in numeric]
            inner = "".join(f"{o}{_h(cell)}</{tag}>" for o, cell in zip(opening, cells))
            return f"<tr>{inner}</tr>"

        body = "\n".join(row(cells, "td") for cells in block.rows)
        return f"<table>\n<thead>{row(block.columns, 'th')}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"
    if isinstance(block, _Image):
        return (f'<figure><img src="{_html.escape(block.src)}" alt="{_html.escape(block.alt)}">'
                f"<figcaption>{_html.escape(block.alt)}</figcaption></figure>")
    if isinstance(block, _Warning):
        return f'<p class="warning"><strong>Warning:</strong> {_h(block.text)}</p>'
    if isinstance(block, list):
        return "<ul>\n" + "\n".join(f"<li>{''.join(map(_h, item))}</li>" for item in block) + "\n</ul>"
    return f"<p>{''.join(map(_h, block))}</p>"


def _h(inline: _Inline) -> str:
    """HTML for one inline: escaped, the full text kept as a hover title when shortened."""
    span = inline if isinstance(inline, _Span) else _Span(str(inline))
    text = _html.escape(_flat(span))
    if span.kind == "code":
        return f"<code>{text}</code>"
    if span.kind == "strong":
        return f"<strong>{text}</strong>"
    if span.width is not None and len(" ".join(span.text.split())) > span.width:
        full = _html.escape(span.text[:_TOOLTIP_WIDTH])
        return f'<span title="{full}">{text}</span>'
    return text


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="script-src 'none'; object-src 'none'; base-uri 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #1b1f24; line-height: 1.45; }}
h1 {{ font-size: 1.6rem; }} h2 {{ font-size: 1.25rem; margin-top: 2rem;
       border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }}
table {{ border-collapse: collapse; margin: .5rem 0; font-size: .9rem; display: block; overflow-x: auto; }}
th, td {{ border: 1px solid #d0d7de; padding: .25rem .5rem; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; }} tbody tr:nth-child(even) {{ background: #fafbfc; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
code {{ background: #f6f8fa; padding: 0 .25rem; border-radius: 3px; }}
figure {{ margin: 1rem 0; }} img {{ max-width: 100%; height: auto; }}
figcaption {{ font-size: .85rem; color: #57606a; }}
.warning {{ background: #fff8c5; border: 1px solid #d4a72c; border-left-width: 4px;
           padding: .5rem .75rem; border-radius: 3px; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


# --------------------------------------------------------------------------- helpers


def _flat(span: _Span) -> str:
    """The text on one line (whitespace runs become one space), shortened to ``span.width``."""
    if span.width is None:
        return re.sub(r"\s+", " ", span.text)
    flat = " ".join(span.text.split())
    return flat if len(flat) <= span.width else flat[: span.width - 1] + "…"


def _num(value: Any, decimals: int = 4) -> str:
    """A number with 4 decimals, None as an empty cell, anything else (hand-edited?) as text."""
    if value is None:
        return ""
    return f"{value:.{decimals}f}" if _is_number(value) else str(value)


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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value(value: Any) -> str:
    """A count as is, any other number with 4 decimals, anything else as text."""
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _num(value) if _is_number(value) else str(value)
