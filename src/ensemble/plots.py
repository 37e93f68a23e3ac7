"""PNG plots for the report, drawn from the report dict (report.json) alone.

`write_plots` draws what the report has data for: confusion matrices (needs gold labels), the
pairwise agreement heatmap (needs two members), training curves (``training``) and the
accuracy-coverage curve (``abstention``). Anything missing is skipped, not drawn empty.

Matplotlib is imported inside the functions so that importing this module, and so starting the
CLI, stays fast. Figures are plain `matplotlib.figure.Figure` objects on an Agg canvas rather than
pyplot figures: no GUI backend gets chosen, the user's backend is left as it is, and no global
figure registry keeps them alive after they are saved.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["fallback_fonts", "write_plots"]

_DPI = 100
_LABEL_WIDTH = 18  # characters of a class or member name shown on an axis or in a legend
_MAX_ANNOTATED = 30  # classes beyond this make per-cell numbers unreadable: colour only
_MAX_PANELS_CLASSES = 10  # beyond this many classes, members are compared by recall, not a matrix each
_MIN_SPAN = 0.05  # the least accuracy range the coverage plot's axis shows
_PAGE_WIDTH = 16.0  # inches a multi-panel figure may grow to before wrapping into rows
_CURVES = (("train_loss", "train loss"), ("valid_loss", "valid loss"),
           ("accuracy", "valid accuracy"))


def write_plots(report: dict, out_dir: str | os.PathLike) -> dict[str, str]:
    """Write the report's plots as PNGs into ``out_dir/plots/``, each file atomically.

    Returns ``{key: "plots/<key>.png"}`` for the plots written, in a fixed order: ``confusion``,
    ``agreement``, ``training``, ``coverage``. Paths are relative to ``out_dir``, as the report
    pages link them. The same report gives the same bytes. A plot of an earlier report in the
    same folder that this one has no data for is removed, so ``plots/`` never shows a stale figure.

    Example:
        >>> import tempfile
        >>> report = {"labels": ["neg", "pos"], "members": {"a": {}, "b": {}},
        ...     "ensemble": {}, "agreement": {"pairwise": {"a": {"a": 1.0, "b": 0.8},
        ...                                                "b": {"a": 0.8, "b": 1.0}}}}
        >>> write_plots(report, tempfile.mkdtemp())
        {'agreement': 'plots/agreement.png'}
    """
    import matplotlib
    import matplotlib.style

    out = Path(out_dir) / "plots"
    drawers: tuple[tuple[str, Callable[[dict], Figure | None]], ...] = (
        ("confusion", _confusion), ("agreement", _agreement), ("training", _training),
        ("coverage", _coverage),
    )
    written: dict[str, str] = {}
    # The default style, not the user's rcParams, so the same report always gives the same PNG;
    # the context restores the user's settings afterwards.
    with warnings.catch_warnings(), matplotlib.style.context("default"):
        names = [*(report.get("labels") or []), *(report.get("members") or {})]
        fallbacks, undrawn = _fonts_for(names)
        if fallbacks:  # per-glyph fallback (matplotlib >= 3.6): CJK or Thai labels drawn, not boxes
            matplotlib.rcParams["font.family"] = ["DejaVu Sans", *fallbacks]
        # Labels in scripts no installed font has are drawn as boxes; no reason to warn per glyph.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")
        for key, draw in drawers:
            figure = draw(report)
            if figure is not None:
                _save(figure, out / f"{key}.png")
                written[key] = f"plots/{key}.png"
            else:
                (out / f"{key}.png").unlink(missing_ok=True)
    boxed = [str(name) for name in names if any(ord(c) in undrawn for c in str(name))]
    if boxed and written:  # said once, not per glyph: the fix is a font, not a change to the data
        shown = ", ".join(repr(name) for name in boxed[:3]) + (f" and {len(boxed) - 3} more" if len(boxed) > 3 else "")
        print(f"note: no installed font draws every character of {shown}; the plots show boxes for them "
              "(install a font that has them, e.g. Noto: fonts-noto-cjk for Chinese, Japanese and Korean)",
              file=sys.stderr)
    return written


def fallback_fonts(texts: Iterable[str]) -> list[str]:
    """Installed font families that draw the characters of `texts` that DejaVu Sans (the plots'
    font) lacks, a few covering as many as they can, in a fixed order; [] when DejaVu has them all
    or no installed font does.

    Example:
        >>> fallback_fonts(["negative", "positive"])
        []
    """
    return _fonts_for(texts)[0]


def _fonts_for(texts: Iterable[str]) -> tuple[list[str], set[int]]:
    """`fallback_fonts`, and the code points that neither DejaVu Sans nor they draw."""
    from matplotlib import font_manager

    missing = {ord(c) for text in texts for c in str(text) if not c.isspace()}
    missing -= _charmap(font_manager.findfont("DejaVu Sans"))
    chosen: list[str] = []
    for entry in sorted(font_manager.fontManager.ttflist, key=lambda f: (f.name, f.fname)):
        if not missing:
            break
        covered = missing & _charmap(entry.fname)
        if covered and entry.name not in chosen:
            chosen.append(entry.name)
            missing -= covered
    return chosen, missing


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    """The code points the font file at `path` draws (none when it cannot be read)."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


# --------------------------------------------------------------------------- figures


def _confusion(report: dict) -> Figure | None:
    """The ensemble's confusion matrix first, then each member's: counts written in, colour = share
    of the gold row. Past `_MAX_PANELS_CLASSES` classes a matrix per member would make a figure
    screens tall: the members are then compared in one per-class recall heatmap under the
    ensemble's matrix."""
    from matplotlib.figure import Figure

    labels = _distinct(report.get("labels") or [])
    k = len(labels)
    entries = [("ensemble", report.get("ensemble") or {})]
    entries += [(str(name), entry) for name, entry in (report.get("members") or {}).items()]
    panels = [(name, entry) for name, entry in entries if _is_square(entry.get("confusion"), k)]
    if not panels or k == 0:
        return None
    abstention = report.get("abstention")
    abstaining = isinstance(abstention, dict) and abstention.get("threshold") is not None
    font = 8 if k <= 10 else 6 if k <= 20 else 5
    # Inches per panel: the cells (0.3 inch a class) plus room for the longest tick label (about
    # 0.6 of the font size a character), so long label names do not squeeze the matrix.
    ticks = (font + 1) / 72 * 0.6 * max(map(len, labels))
    side = 1.2 + 0.3 * k + max(0.5, ticks)
    if k > _MAX_PANELS_CLASSES and len(panels) > 1:
        return _confusion_and_recall(report, panels, labels, side, font, abstaining)
    columns = max(1, min(len(panels), 4, int(_PAGE_WIDTH // side)))
    rows = math.ceil(len(panels) / columns)
    # A little short rather than tall: "compressed" then closes the gaps between panels and the
    # tight crop on saving trims the spare width, whereas spare height would stay as a gap.
    height = rows * side + 0.6
    figure = Figure(figsize=(columns * side + 1.0, height), layout="compressed")
    axes = figure.subplots(rows, columns, squeeze=False)
    # titles on at most two lines as wide as a panel (about 9 characters an inch at 10 points)
    titles = dict(zip([n for n, _ in panels], _two_lines([n for n, _ in panels], max(10, int(side * 9)))))
    image = None
    for ax, (name, entry) in zip(axes.flat, panels):
        image = _matrix(ax, entry, labels, font, titles[name], name == "ensemble", abstaining)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    # Beside one row; above several, where a bar as tall as the figure would dwarf the panels.
    placement = {"location": "right", "shrink": 0.8} if rows == 1 else {
        "location": "top", "shrink": min(0.5, 6.0 / (columns * side)), "aspect": 30,
        "pad": 0.2 / height}  # pad is a share of the figure's height: keep it to 0.2 inch
    figure.colorbar(image, ax=axes, label="share of gold row", **placement)
    figure.suptitle(f"Confusion matrices{_on_split(report)}", fontsize=11)
    return figure


def _matrix(ax: Any, entry: dict, labels: list[str], font: int, title: str, ensemble: bool, abstaining: bool) -> Any:
    """One confusion matrix on `ax`: colour the share of the gold row, counts written in."""
    import numpy as np

    k = len(labels)
    counts = np.asarray(entry["confusion"], dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    if k <= _MAX_ANNOTATED:
        for (i, j), count in np.ndenumerate(counts):
            ax.text(j, i, f"{count:.0f}", ha="center", va="center", fontsize=font,
                    color="white" if shares[i, j] > 0.55 else "black")
    rotate = k > 6 or max(map(len, labels)) > 5
    ax.set_xticks(range(k), labels, fontsize=font + 1, rotation=90 if rotate else 0)
    ax.set_yticks(range(k), labels, fontsize=font + 1)
    ax.set_xlabel("predicted", fontsize=9)
    ax.set_ylabel("gold", fontsize=9)
    accuracy = _number(entry.get("accuracy"))
    title += "" if accuracy is None else f"\naccuracy {accuracy:.3f}"
    if ensemble and abstaining:
        title += "\n(every row, before abstention)"
    ax.set_title(title, fontsize=10, fontweight="bold" if ensemble else "normal")
    return image


def _confusion_and_recall(report: dict, panels: list, labels: list[str], side: float, font: int,
                          abstaining: bool) -> Figure:
    """Many classes: the ensemble's confusion matrix, and under it each class's recall (the share
    of its gold rows predicted right) for the ensemble and every member, a row each."""
    import numpy as np
    from matplotlib.figure import Figure

    k = len(labels)
    names = [name for name, _ in panels]
    recall = np.full((len(panels), k), np.nan)
    for row, (_, entry) in enumerate(panels):
        counts = np.asarray(entry["confusion"], dtype=np.float64)
        totals = counts.sum(axis=1)
        recall[row] = np.divide(np.diag(counts), totals, out=np.full(k, np.nan), where=totals > 0)
    shown = _distinct(names)
    name_width = (font + 1) / 72 * 0.6 * max(map(len, shown))
    heat = 0.3 * len(panels) + 0.9
    width = max(side, 0.3 * k + name_width + 1.6)
    figure = Figure(figsize=(width + 1.0, side + heat + 0.8), layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=[side, heat])
    ax = top.subplots()
    image = _matrix(ax, panels[0][1], labels, font, "ensemble", True, abstaining)
    top.colorbar(image, ax=ax, shrink=0.8, label="share of gold row")
    ax = bottom.subplots()
    image = ax.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    if k <= _MAX_ANNOTATED:
        for (i, j), value in np.ndenumerate(recall):
            if not math.isnan(value):
                ax.text(j, i, _share(value), ha="center", va="center", fontsize=font,
                        color="white" if value > 0.55 else "black")
    ax.set_xticks(range(k), labels, fontsize=font + 1, rotation=90)
    ax.set_yticks(range(len(panels)), shown, fontsize=font + 1)
    ax.get_yticklabels()[0].set_fontweight("bold")
    ax.set_title("Recall per gold class (share of its rows predicted right)", fontsize=10)
    bottom.colorbar(image, ax=ax, shrink=0.9, label="recall")
    figure.suptitle(f"Confusion matrix and per-class recall{_on_split(report)}", fontsize=11)
    return figure


def _agreement(report: dict) -> Figure | None:
    """Heatmap of the share of rows on which two members predict the same class."""
    import numpy as np
    from matplotlib.figure import Figure

    pairwise = (report.get("agreement") or {}).get("pairwise") or {}
    names = list(pairwise)
    if len(names) < 2:
        return None
    shares = np.array([[_number((pairwise.get(a) or {}).get(b)) for b in names] for a in names],
                      dtype=np.float64)  # None -> nan: drawn blank
    off_diagonal = shares[~np.eye(len(names), dtype=bool)]
    if np.isnan(off_diagonal).all():
        return None
    # Members mostly agree (0.8-0.95); a colour scale from 0 would paint them all alike. The
    # diagonal (a member with itself, 1 by definition) is left blank so that it does not read as
    # a pair in full agreement.
    low = min(0.9, math.floor(float(np.nanmin(off_diagonal)) * 10) / 10)
    shares[np.eye(len(names), dtype=bool)] = np.nan
    side = 2.6 + 0.5 * len(names)
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(shares, cmap="viridis", vmin=low, vmax=1.0)
    font = 9 if len(names) <= 8 else 7
    for (i, j), share in np.ndenumerate(shares):
        if not math.isnan(share):
            dark = share < low + 0.6 * (1.0 - low)  # viridis is dark at the low end
            # 3 decimals: 0.9967 must not read as the 1.00 of two members that always agree
            ax.text(j, i, f"{share:.3f}", ha="center", va="center", fontsize=font,
                    color="white" if dark else "black")
    ticks = _distinct(names)
    # Upright only while short names fit side by side under their cells.
    upright = len(names) <= 4 and max(map(len, ticks)) <= 7
    ax.set_xticks(range(len(names)), ticks, rotation=0 if upright else 90, fontsize=font)
    ax.set_yticks(range(len(names)), ticks, fontsize=font)
    ax.set_title(f"Pairwise agreement{_on_split(report)}", fontsize=11)
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of rows predicted alike")
    return figure


def _training(report: dict) -> Figure | None:
    """Train loss, valid loss and valid accuracy per epoch; one line per member, one legend."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    history = report.get("training")
    if not isinstance(history, dict):
        return None
    names = [str(name) for name in history]
    panels = []
    for key, title in _CURVES:
        lines = []
        for name, epochs in zip(names, history.values()):
            points = [(_number(e.get("epoch")), _number(e.get(key)))
                      for e in (epochs if isinstance(epochs, list) else []) if isinstance(e, dict)]
            points = sorted((x, y) for x, y in points if x is not None and y is not None)
            kept = [(_number(e.get("epoch")), _number(e.get(key))) for e in (epochs if isinstance(epochs, list) else [])
                    if isinstance(e, dict) and e.get("kept") is True]
            if points:
                lines.append((name, points, [p for p in kept if None not in p]))
        if lines:
            panels.append((title, lines))
    if not panels:
        return None

    styles = _member_styles(names)
    legend = dict(zip(names, _distinct(names)))
    columns = min(4, len(names))
    legend_rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4.2 * len(panels), 3.4 + 0.25 * legend_rows), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, lines) in zip(axes, panels):
        for name, points, kept in lines:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, **styles[name])
            for x, y in kept:  # the epoch whose weights vote: a ring around its point
                ax.plot([x], [y], linestyle="", marker="o", markersize=8, markerfacecolor="none",
                        markeredgewidth=1.5, color=styles[name].get("color"))
        ax.set_title(title, fontsize=11)
        ax.set_ylabel(title)
        ax.set_xlabel("epoch (ring: the kept epoch)" if any(kept for _, _, kept in lines) else "epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    plotted = {name for _, lines in panels for name, _, _ in lines}
    drawn = [name for name in names if name in plotted]
    handles = [Line2D([], [], marker="o", markersize=3, **styles[name]) for name in drawn]
    figure.legend(handles, [_legend_label(legend[name]) for name in drawn], loc="outside lower center",
                  ncols=min(4, len(drawn)), fontsize=9, frameon=False)
    return figure


def _coverage(report: dict) -> Figure | None:
    """Accuracy on the answered rows against the share answered, the chosen threshold marked."""
    from matplotlib.figure import Figure

    abstention = report.get("abstention")
    if not isinstance(abstention, dict):
        return None
    if abstention.get("on") == "confidence" and report.get("method") == "hard":  # a hard vote's is its vote share
        abstention = {**abstention, "on": "vote share"}
    points = []
    for point in abstention.get("curve") or []:
        if isinstance(point, dict):  # no accuracy where nothing is answered: no point
            xy = (_number(point.get("coverage")), _number(point.get("accuracy")))
            points += [xy] if None not in xy else []
    points.sort()
    if not points:
        return None
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = figure.subplots()
    xs, ys = zip(*points)
    ax.plot(xs, ys, marker=".", linewidth=1.5, color="C0", label="ensemble")
    threshold = _number(abstention.get("threshold"))
    coverage = _number(abstention.get("coverage"))
    accuracy = _number(abstention.get("accuracy_answered"))
    if threshold is not None and coverage is not None and accuracy is not None:
        on = _short(abstention.get("on") or "score")
        ax.axvline(coverage, color="C3", linestyle=":", linewidth=1)
        ax.plot([coverage], [accuracy], linestyle="", marker="o", markersize=9, color="C3",
                markerfacecolor="none", markeredgewidth=2,
                label=f"chosen {on} threshold {threshold:.3g}\n(coverage {coverage:.3f}, "
                      f"accuracy {accuracy:.3f})")
    ax.set_xlim(0.0, 1.02)
    # At least 0.05 of accuracy tall: a span of a few rows would otherwise fill the axis and
    # draw noise as a cliff. The accuracy answering every row is the baseline to read against.
    low, high = min(ys), max(ys)
    if high - low < _MIN_SPAN:
        middle = min(max((low + high) / 2, _MIN_SPAN / 2), 1.0 - _MIN_SPAN / 2)
        ax.set_ylim(middle - _MIN_SPAN / 2 - 0.005, middle + _MIN_SPAN / 2 + 0.005)
    everyone = [y for x, y in points if x == max(xs)]
    if everyone:
        ax.axhline(everyone[0], color="0.5", linestyle="--", linewidth=1,
                   label=f"answering every row ({everyone[0]:.3f})" if max(xs) == 1.0 else
                   f"answering the most rows ({everyone[0]:.3f})")
    ax.set_xlabel("coverage (share of rows answered)")
    ax.set_ylabel("accuracy on answered rows")
    on = abstention.get("on")
    ax.set_title(f"Accuracy vs coverage{_on_split(report)}" + (f"\nabstaining on low {_short(on)}" if on else ""),
                 fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=9)  # where it hides the fewest points
    return figure


# --------------------------------------------------------------------------- helpers


def _save(figure: Figure, path: Path) -> None:
    """Save as PNG via a temporary file in the same folder and os.replace: never half a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .files import atomic_write

    FigureCanvasAgg(figure)  # attaches itself to the figure: Agg without choosing a backend
    # No "Software" stamp: the bytes then depend on the drawing, not the library version.
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=_DPI, bbox_inches="tight",
                                                      pad_inches=0.15, metadata={"Software": None}), binary=True)


def _member_styles(names: list[str]) -> dict[str, dict[str, Any]]:
    """A colour and line style per member, distinct for up to 20 members."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    # tab20 pairs a dark and a light shade of each hue: the 10 dark ones first, then the light ones,
    # so that neighbours in the legend differ in hue
    order = list(range(palette.N)) if palette.N == 10 else [*range(0, 20, 2), *range(1, 20, 2)]
    dashes = ("-", "--", "-.", ":")
    return {name: {"color": palette(order[i % palette.N]), "linestyle": dashes[(i // palette.N) % 4]}
            for i, name in enumerate(names)}


def _is_square(matrix: Any, k: int) -> bool:
    return (isinstance(matrix, list) and len(matrix) == k
            and all(isinstance(row, list) and len(row) == k for row in matrix))


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (absent, None, NaN, text, bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _short(text: Any, width: int = _LABEL_WIDTH) -> str:
    """One line of at most ``width`` characters, shown literally by matplotlib."""
    flat = " ".join(str(text).split())
    if len(flat) > width:
        flat = flat[: width - 1] + "…"
    # Two "$" would switch matplotlib to math mode (and can fail to parse); "\$" is a plain "$".
    return flat.replace("$", r"\$")


def _legend_label(label: str) -> str:
    # Matplotlib leaves labels starting with "_" out of legends; a leading space keeps them in.
    return " " + label if label.startswith("_") else label


def _on_split(report: dict) -> str:
    """" on <split> (N rows)" for a title: a PNG seen on its own still says what it measures."""
    split, rows = report.get("split"), report.get("rows")
    if split is None:
        return ""
    counted = f", {rows:,} rows" if isinstance(rows, int) and not isinstance(rows, bool) else ""
    return f" on {_short(split)}{counted}"


def _share(value: float) -> str:
    """A share in [0, 1] in 3 characters: ``.83``, ``1`` (only when it rounds to 1), ``0``.

    Example:
        >>> [_share(v) for v in (0.834, 0.9967, 1.0, 0.0, 0.004)]
        ['.83', '1', '1', '0', '.00']
    """
    text = f"{value:.2f}"
    return "1" if text == "1.00" else "0" if value == 0 else text.lstrip("0")


def _two_lines(names: list[Any], width: int) -> list[str]:
    """`_distinct` names on up to two lines of `width` characters, broken after a ``_``, ``-``,
    ``.`` or space in the first line's second half where there is one; second lines too long are
    cut as `_distinct` cuts, so that names alike in their first line still read apart.

    Example:
        >>> names = ["roberta_large_finetune_lr2e-5_seed1", "roberta_large_finetune_lr2e-5_seed2", "bert"]
        >>> [name.splitlines() for name in _two_lines(names, 18)]
        [['roberta_large_', 'finetune…e-5_seed1'], ['roberta_large_', 'finetune…e-5_seed2'], ['bert']]
        >>> len(set(_two_lines(["electra_large_lr1e-5_seed1_warmup0.06", "electra_large_lr3e-5_seed1_warmup0.06"], 18)))
        2
    """
    firsts, rests = [], []
    for name in _distinct(names, 2 * width):
        # after the last separator in the line's second half, else at the width
        cut = len(name) if len(name) <= width else max(name.rfind(c, width // 2, width) for c in "_-. ") + 1 or width
        firsts.append(name[:cut])
        rests.append(name[cut:])
    # the second lines cut as `_distinct` cuts, so that two titles alike in their first line differ
    shown = dict(zip(rests, _distinct(rests, width)))
    return [first + ("\n" + shown[rest] if rest else "") for first, rest in zip(firsts, rests)]


def _distinct(names: list[Any], width: int = _LABEL_WIDTH) -> list[str]:
    """`_short` of each name, cut in the middle where cutting the end would make two alike:
    members often differ only by a suffix (a seed, a learning rate).

    Example:
        >>> _distinct(["roberta_large_lr2e-5_seed1", "roberta_large_lr2e-5_seed2", "bert"])
        ['roberta_…e-5_seed1', 'roberta_…e-5_seed2', 'bert']
    """
    flat = [" ".join(str(name).split()) for name in names]
    cut = [_short(name, width) for name in flat]
    if len(set(cut)) == len(set(flat)):
        return cut
    for tail in range(width // 2, width - 1):  # longer tails until every name reads apart
        head = width - 1 - tail
        cut = [name if len(name) <= width else name[:head] + "…" + name[-tail:] for name in flat]
        if len(set(cut)) == len(set(flat)):
            break
    else:
        cut = flat  # no cut of this width tells them apart: the whole names
    return [name.replace("$", r"\$") for name in cut]
