"""The report pages' building blocks and their two writers: markdown (report.md) and HTML (report.html).

`render` says what the report holds as a list of blocks (a paragraph of inline spans, bullet
items, a table, an image, a warning); this module says how each block looks. Every text is
escaped on the way out: markdown table syntax in report.md, HTML in report.html.
"""

from __future__ import annotations

import html as _html
import re
from dataclasses import dataclass

_TOOLTIP_WIDTH = 2000  # characters of the full text kept in report.html's hover title
# markdown syntax in plain text, escaped where it would act: "\", "`", "*", "[", "]", "<", ">",
# "|", "~"; "!" only before "[" (an image), "&" only where it starts an entity (&lt;, &#60;),
# "_" only at a word's edge (max_length is no emphasis in CommonMark). "great!" and "R&D" stay
# as written, also in viewers that show a needless backslash.
_MD_ACTIVE = re.compile(r"[\\`*\[\]<>|~]|!(?=\[)|&(?=#?\w+;)|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


@dataclass(frozen=True)
class Span:
    """Inline text with a look; a bare ``str`` is plain text. All of it is escaped when shown."""

    text: str
    kind: str = "plain"  # "plain", "code", "strong", or "literal" (fixed markdown, not escaped)
    width: int | None = None  # shorten to this many characters (free text in a table)


Inline = str | Span


@dataclass(frozen=True)
class Table:
    columns: list[Inline]
    rows: list[list[Inline]]
    numeric: list[bool] | None = None  # right-aligned columns; default: all but the first


@dataclass(frozen=True)
class Image:
    alt: str
    src: str


@dataclass(frozen=True)
class Caveat:
    """A caveat the reader must not miss: a quote in report.md, a framed box in report.html."""

    text: str


Block = tuple | list | Table | Image | Caveat  # tuple: a paragraph of inlines; list: bullet items


# --------------------------------------------------------------------------- markdown


def md_block(block: Block) -> str:
    """One block as markdown.

    Example:
        >>> print(md_block(Table(["model", "accuracy"], [["a|b", "0.9000"]])))
        | model | accuracy |
        | --- | ---: |
        | a\\|b | 0.9000 |
    """
    if isinstance(block, Table):
        numeric = block.numeric or [False] + [True] * (len(block.columns) - 1)
        align = ["---:" if number else "---" for number in numeric]
        cells = [[md_inline(c).strip() for c in block.columns], align]
        cells += [[md_inline(c).strip() for c in row] for row in block.rows]
        return "\n".join(f"| {' | '.join(row)} |" for row in cells)
    if isinstance(block, Image):
        return f"![{md_inline(block.alt)}]({block.src})"
    if isinstance(block, Caveat):
        return f"> **Warning:** {md_inline(block.text)}"
    if isinstance(block, list):
        return "\n".join(f"- {''.join(map(md_inline, item))}" for item in block)
    return "".join(map(md_inline, block))


def md_inline(inline: Inline) -> str:
    """One line of markdown, safe inside a table cell."""
    span = inline if isinstance(inline, Span) else Span(str(inline))
    if span.kind == "literal":
        return span.text
    text = _flat(span)
    if span.kind == "code":
        fence = "``" if "`" in text else "`"  # a backtick inside needs a longer fence
        return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"
    # Escaped after shortening, so a cut never splits an escape: every character markdown could
    # read as syntax (emphasis, a link or image that a viewer would fetch, an HTML tag or
    # entity, a table cell's end) is backslash-escaped, which CommonMark allows for any ASCII
    # punctuation, so a label such as "*x*" or "![x](http://...)" shows as written.
    text = _MD_ACTIVE.sub(r"\\\g<0>", text)
    return f"**{text}**" if span.kind == "strong" else text



# --------------------------------------------------------------------------- html


def html_block(block: Block) -> str:
    """One block as HTML.

    Example:
        >>> html_block(("Split: ", Span("<test>", "code")))
        '<p>Split: <code>&lt;test&gt;</code></p>'
    """
    if isinstance(block, Table):
        numeric = block.numeric or [False] + [True] * (len(block.columns) - 1)

        def row(cells: list[Inline], tag: str) -> str:
            opening = [f'<{tag} class="num">' if number else f"<{tag}>" for number in numeric]
            inner = "".join(f"{o}{html_inline(cell)}</{tag}>" for o, cell in zip(opening, cells))
            return f"<tr>{inner}</tr>"

        body = "\n".join(row(cells, "td") for cells in block.rows)
        return f"<table>\n<thead>{row(block.columns, 'th')}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"
    if isinstance(block, Image):
        return (f'<figure><img src="{_html.escape(block.src)}" alt="{_html.escape(block.alt)}">'
                f"<figcaption>{_html.escape(block.alt)}</figcaption></figure>")
    if isinstance(block, Caveat):
        return f'<p class="warning"><strong>Warning:</strong> {html_inline(block.text)}</p>'
    if isinstance(block, list):
        return "<ul>\n" + "\n".join(f"<li>{''.join(map(html_inline, item))}</li>" for item in block) + "\n</ul>"
    return f"<p>{''.join(map(html_inline, block))}</p>"


def html_inline(inline: Inline) -> str:
    """HTML for one inline: escaped, the full text kept as a hover title when shortened."""
    span = inline if isinstance(inline, Span) else Span(str(inline))
    text = _html.escape(_flat(span))
    if span.kind == "code":
        return f"<code>{text}</code>"
    if span.kind == "strong":
        return f"<strong>{text}</strong>"
    if span.width is not None and len(" ".join(span.text.split())) > span.width:
        full = _html.escape(span.text[:_TOOLTIP_WIDTH])
        return f'<span title="{full}">{text}</span>'
    return text


PAGE = """<!DOCTYPE html>
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


def _flat(span: Span) -> str:
    """The text on one line (whitespace runs become one space), shortened to ``span.width``."""
    if span.width is None:
        return re.sub(r"\s+", " ", span.text)
    flat = " ".join(span.text.split())
    return flat if len(flat) <= span.width else flat[: span.width - 1] + "…"
