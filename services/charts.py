"""Charts for operators' reports (`/stats`, `/review`): one PNG drawn off-screen.

Importing matplotlib costs about a second of CPU on a small machine, and a render
another tenth: neither may happen on the event loop or at start-up. This module imports
nothing of matplotlib at import time; `render` runs the drawing in a worker thread,
which imports it lazily on first use (`pondbot migrate/export` and the bot's start never
pay for it).

Labels are mostly Chinese. matplotlib's default font (DejaVu Sans) has no CJK glyphs and
would draw boxes with only a warning, and system fonts differ from machine to machine,
so the font is the one the `pylopdf-fonts-zh-cn` package installs with pondbot (Noto Sans
SC, SIL Open Font License): its file is registered with matplotlib's font manager by
path and chosen explicitly for every text of the figure. Nothing is downloaded.

matplotlib's font manager and rc parameters are process-wide, so renders take turns on
a lock (one is about 0.1 s).
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["Chart", "Panel", "font_path", "has_glyphs", "render", "render_png"]

PanelKind = Literal["line", "bar", "barh"]

_lock = threading.Lock()
_family: list[str] = []  # the registered family name, once registered


@dataclass(frozen=True, slots=True)
class Panel:
    """One plot of a chart: `values[i]` drawn for `labels[i]`. `percent`: the values
    are fractions shown as percentages. `target`: a dashed reference line (a plan)."""

    title: str
    kind: PanelKind
    labels: Sequence[str]
    values: Sequence[float]
    percent: bool = False
    target: float | None = None
    target_label: str = ""
    empty: str = "—"  # said instead of a plot without any label


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    panels: Sequence[Panel] = field(default_factory=tuple)
    note: str = ""  # a line under the title (the span, the pond)


def font_path() -> Path:
    """The CJK font file the project installs (Noto Sans SC, regular)."""
    import pylopdf_fonts_zh_cn

    return Path(pylopdf_fonts_zh_cn.sans_path())


def has_glyphs(text: str, path: Path | None = None) -> bool:
    """Whether the font has a glyph for every character of `text` (spaces aside)."""
    from matplotlib.ft2font import FT2Font

    charmap = FT2Font(str(path or font_path())).get_charmap()
    return all(ord(ch) in charmap for ch in text if not ch.isspace())


def _font_family() -> str:
    """Register the package's font file with matplotlib (once) and return its family
    name. Called under `_lock`."""
    if not _family:
        from matplotlib import font_manager

        path = font_path()
        font_manager.fontManager.addfont(str(path))
        _family.append(font_manager.FontProperties(fname=str(path)).get_name())
    return _family[0]


def render_png(chart: Chart) -> bytes:
    """Draw `chart` as a PNG (blocking: run it in a worker thread, see `render`)."""
    with _lock:
        import matplotlib

        family = _font_family()
        matplotlib.use("Agg")  # off-screen, whatever the environment asks for
        with matplotlib.rc_context({
            "font.family": [family],
            "axes.unicode_minus": False,  # the font's hyphen, not U+2212
            "figure.dpi": 100,
        }):
            return _draw(chart)


def _draw(chart: Chart) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    panels = list(chart.panels) or [Panel("", "bar", [], [])]
    fig = Figure(figsize=(8, 2.2 + 2.6 * len(panels)))
    FigureCanvasAgg(fig)
    axes: Any = fig.subplots(len(panels), 1, squeeze=False)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        labels, values = list(panel.labels), [float(v) for v in panel.values]
        ax.set_title(panel.title, fontsize=11, loc="left")
        if not labels:
            ax.text(0.5, 0.5, panel.empty, transform=ax.transAxes, ha="center", va="center",
                    color="#888888", fontsize=12)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        value_axis = ax.xaxis if panel.kind == "barh" else ax.yaxis
        if not panel.percent:
            value_axis.set_major_locator(MaxNLocator(integer=True))
        if not any(values) and panel.target is None:
            (ax.set_xlim if panel.kind == "barh" else ax.set_ylim)(0, 1)
        if panel.kind == "line":
            ax.plot(labels, values, marker="o", color="#2a7ab9")
            ax.set_ylim(bottom=0, top=max([0.1 if panel.percent else 1.0, *values]) * 1.15)
        elif panel.kind == "barh":
            bars = ax.barh(labels, values, color="#e07b39")
            ax.invert_yaxis()  # the first label on top
            ax.bar_label(bars, labels=[_num(v, panel.percent) for v in values], padding=3,
                         fontsize=8)
            ax.margins(x=0.15)
        else:
            bars = ax.bar(labels, values, color="#2a9d8f")
            ax.bar_label(bars, labels=[_num(v, panel.percent) for v in values], padding=2,
                         fontsize=8)
            ax.margins(y=0.15)
        if panel.percent:
            value_axis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        if panel.target is not None:
            draw = ax.axvline if panel.kind == "barh" else ax.axhline
            draw(panel.target, color="#c0392b", linestyle="--", linewidth=1,
                 label=panel.target_label or None)
            if panel.target_label:
                ax.legend(loc="best", fontsize=8)
        ax.tick_params(labelsize=8)
        if panel.kind != "barh" and len(labels) > 8:
            ax.tick_params(axis="x", labelrotation=45)
        ax.grid(axis="x" if panel.kind == "barh" else "y", alpha=0.3)
    fig.suptitle(chart.title + (f"\n{chart.note}" if chart.note else ""), fontsize=13)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def _num(value: float, percent: bool) -> str:
    if percent:
        return f"{value * 100:.0f}%"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


async def render(chart: Chart) -> bytes:
    """The chart as PNG bytes, drawn in a worker thread: the event loop goes on
    handling updates meanwhile."""
    return await asyncio.to_thread(render_png, chart)
