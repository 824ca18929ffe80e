"""Matplotlib figures of attributions: heat maps, overlays, channels, path curves, grids,
error histograms and faithfulness (deletion / insertion) distributions and curves.

Every function returns a `matplotlib.figure.Figure` drawn with the Agg canvas;
no pyplot state is created or touched, so figures can be made in worker
processes, tests and notebooks alike (`fig.savefig("x.png")`, or display it).

Two lines to any image's heat map, photo and overlay:

    from transforms.plots import audit_figure
    audit_figure("output/sample", "chelsea.png").savefig("chelsea_ig.png")

Heat maps show the seed notebook's attribution mask, sum_c |a[h, w, c]|, scaled
by its 99th percentile over the image, padding left out (a few extreme pixels would
otherwise wash the map out): a
magnitude, evidence for and against the class alike, and titled so; `channel_figure`
draws the signed maps.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text
from matplotlib.ticker import Formatter

from transforms import faithfulness, quiet, results, wording
from transforms.manifest import has_one_output

__all__ = [
    "GRID_MAX_ROWS",
    "PANELS",
    "attribution_figure",
    "attribution_mask",
    "attribution_error_figure",
    "audit_figure",
    "channel_figure",
    "completeness_figure",
    "faithfulness_curves_figure",
    "faithfulness_figure",
    "figure_png",
    "grid_figure",
    "log_bins",
    "panel_height",
    "path_figure",
    "row_title",
    "shortened",
]

#: Rows `grid_figure` draws at most: 100 panels lay out and save in seconds; 256 took
#: 23 s on 2 cores, and 2,000 minutes without ever saving (the layout grows faster
#: than the panels). Larger sets are refused, naming `rows.head(n)`.
GRID_MAX_ROWS = 100
#: Panels `attribution_figure` can draw, in the seed's order.
PANELS: tuple[str, ...] = ("baseline", "image", "mask", "overlay")
_TITLES = {
    "baseline": "Baseline",
    "image": "Original image",
    "mask": "Attribution mask (magnitude)",
    "overlay": "Overlay",
}
_CLIP_PERCENTILE = 99.0
_WRONG = "#b2182b"
#: Bars of an error histogram across its values' range (`log_bins`).
_BARS = 30
#: Inches an error histogram is drawn at least: narrower, the y axis's row counts left
#: its axes a few pixels, a legend fitted to them a 2-point font, or none at all.
_MIN_WIDTH = 2.0
#: Inches a faithfulness figure is drawn at least: two panels of an error histogram's.
_MIN_FAITHFULNESS_WIDTH = 2 * _MIN_WIDTH
#: Inches an error histogram's axes keep at least, however many lines its legend takes
#: above them: the figure grows taller for the legend instead.
_MIN_AXES_HEIGHT = 1.5
#: Where an error histogram's log axis draws smaller errors, exact zeros included.
_FLOOR = 1e-7
#: How maps are resampled to their panels: smoothed where a panel has fewer pixels than
#: the map (a 224-pixel map in a report's 190-pixel panel), nearest where it has 3x more
#: (a 16-pixel map stays crisp). "nearest" throughout dropped 1 row and column in 7 of a
#: 224-pixel map, and an isolated bright pixel on them with it.
_SMOOTH_DOWN = "antialiased"
# Texts holding names (file, class, folder) are drawn with `parse_math=False`: matplotlib
# reads text between two `$` as TeX math, so a file named `x$^$y.png` failed the figure
# (a ValueError when drawn, and the report with it) and `a$b$.png` showed as a formula.
# The figures' own texts hold no math.


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for HTML embedding or files): those `figure.savefig`
    writes at matplotlib's default `savefig.*` settings (those of a matplotlibrc, its
    `savefig.bbox` or `savefig.facecolor`, do not apply to a figure on an Agg canvas)."""
    buffer = io.BytesIO()
    # A name in a script the font lacks (CJK in DejaVu Sans) is drawn as boxes, its
    # text on the page: not a UserWarning per character on the report's stderr.
    # (`quiet.ignoring_warnings`: safe when reports are drawn in threads.)
    with quiet.ignoring_warnings(UserWarning, message="Glyph .* missing from font"):
        if not isinstance(figure.canvas, FigureCanvasAgg):  # a pyplot figure's, say
            figure.savefig(buffer, format="png", dpi=dpi)
            return buffer.getvalue()
        # The Agg canvas's own PNG, not savefig's: savefig first lays the figure out in
        # a draw that renders nothing, then draws it again with its layout engine off;
        # the canvas lays it out and renders it in one draw, the same bytes in a tenth
        # (a histogram) to a fifth (a heat map) less time. At `dpi`, as savefig draws.
        drawn_at = figure.dpi
        figure.dpi = dpi
        try:
            figure.canvas.print_png(buffer)
        finally:
            figure.dpi = drawn_at
    return buffer.getvalue()


def _scaled_part(values: np.ndarray) -> np.ndarray:
    """The part of a map, [H, W] or [H, W, C], whose percentile scales it: the map
    without the rows and columns at its edges that are 0 throughout (the padding of a
    non-square image on the black baseline, where x = x'). Counted, the padding's zeros
    lower the percentile: a 1:8 panorama's map had 8 % of its pixels at the top of
    the scale, not 1 %. The whole map where it is 0 everywhere."""
    held = values != 0 if values.ndim == 2 else np.any(values != 0, axis=-1)
    rows, cols = np.flatnonzero(held.any(axis=1)), np.flatnonzero(held.any(axis=0))
    if not rows.size:
        return values
    return values[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def attribution_mask(
    attributions: np.ndarray, clip_percentile: float = _CLIP_PERCENTILE
) -> np.ndarray:
    """The seed's attribution mask, scaled for display.

    Args:
      attributions: [H, W, C] (`full`) or [H, W] (`pixel`, already the channel sum).
      clip_percentile: values above this percentile of the mask (over the image,
        its padding left out: `_scaled_part`) map to 1.

    Returns:
      float32 [H, W] in [0, 1]: sum over channels of |attributions| (|pixel sum|
      for [H, W]), divided by its `clip_percentile` percentile and clipped. A
      pixel with a value that is not finite (inf or NaN: a float16 overflow) is
      drawn at 1, and the others are scaled among themselves.
    """
    with np.errstate(over="ignore"):  # inf stays inf
        values = np.abs(np.asarray(attributions, dtype=np.float32))
    mask = values.sum(axis=-1) if values.ndim == 3 else values
    if mask.ndim != 2:
        raise ValueError(f"expected attributions [H, W, C] or [H, W], got {list(values.shape)}")
    bad = ~np.isfinite(mask)
    mask = np.where(bad, 0.0, mask)
    top = float(np.percentile(_scaled_part(mask), clip_percentile)) if mask.size else 0.0
    if not top > 0:
        top = float(mask.max(initial=0.0)) or 1.0
    return np.where(bad, 1.0, np.clip(mask / top, 0.0, 1.0)).astype(np.float32)


def _not_finite(attributions: np.ndarray) -> int:
    """How many values of a map are inf or NaN."""
    return int(np.size(attributions) - np.isfinite(attributions).sum())


def _is_zero(attributions: np.ndarray) -> bool:
    """Whether every value of a map is 0: drawn, it is a plain black mask, which a
    reader cannot tell from a dark one."""
    return bool(np.size(attributions)) and not np.any(attributions)


def _map_note(attributions: np.ndarray, drawn: str) -> str | None:
    """What a figure says of a map holding inf or NaN (`drawn`: how it drew them), or
    of a map 0 everywhere; None for any other map."""
    bad = _not_finite(attributions)
    if bad:
        return (
            f"{wording.count(bad, 'value')} of this map not finite (inf/NaN, e.g. a float16 "
            f"overflow): {drawn}"
        )
    if _is_zero(attributions):
        return (
            "every value of this map is 0 (the image equals its baseline, or the score has "
            "no gradient along the path)"
        )
    return None


def _as_display(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] or float [H, W, 3] in [0, 1] -> float32 in [0, 1]."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def _blank(ax: Axes, note: str) -> None:
    ax.set_facecolor("#f0f0f0")
    ax.text(
        0.5,
        0.5,
        note,
        ha="center",
        va="center",
        wrap=True,
        fontsize=8,
        color="#555555",
        transform=ax.transAxes,
        parse_math=False,
    )


# Characters per line of a note in an image's panel: the report's smallest (1.9 in)
# holds about 30 at its 8 points; 24 leaves room for a wide letter's line.
_PANEL_NOTE_CHARS = 24


def _draw_panel(
    ax: Axes,
    panel: str,
    mask: np.ndarray,
    image: np.ndarray | None,
    baseline: np.ndarray | None,
    cmap: str,
    overlay_alpha: float,
    image_note: str | None = None,
) -> None:
    """Draws one panel; the single place that decides how each panel looks. Without
    the image, `image_note` says why in its panel, and in a baseline's not drawn (made
    from the image)."""
    ax.set_xticks([])
    ax.set_yticks([])
    if panel == "mask" or (panel == "overlay" and image is None):
        ax.imshow(mask, cmap=cmap, vmin=0.0, vmax=1.0, interpolation=_SMOOTH_DOWN)
    elif panel == "overlay":
        # As in the seed notebook: the mask, with the photo translucent on top.
        ax.imshow(mask, cmap=cmap, vmin=0.0, vmax=1.0, interpolation=_SMOOTH_DOWN)
        ax.imshow(_as_display(image), alpha=overlay_alpha)
    elif panel == "image":
        if image is None:
            _blank(ax, textwrap.fill(image_note or "image not available", _PANEL_NOTE_CHARS))
        else:
            ax.imshow(_as_display(image))
    elif panel == "baseline":
        if baseline is None:
            why = f"made from the image: {image_note}" if image_note else "baseline not available"
            _blank(ax, textwrap.fill(why, _PANEL_NOTE_CHARS))
        else:
            ax.imshow(_as_display(baseline))
    else:
        raise ValueError(f"panel {panel!r} is not one of: {', '.join(PANELS)}.")


def attribution_figure(
    attributions: np.ndarray,
    image: np.ndarray | None = None,
    baseline: np.ndarray | None = None,
    *,
    panels: Sequence[str] = PANELS,
    title: str | None = None,
    note: str | None = None,
    baseline_title: str | None = None,
    image_note: str | None = None,
    cmap: str = "inferno",
    overlay_alpha: float = 0.4,
    panel_size: float = 2.6,
    columns: int | None = None,
) -> Figure:
    """The seed's figure: baseline, original, attribution mask and overlay.

    Args:
      attributions: [H, W, C] or [H, W] (see `attribution_mask`).
      image: the input, uint8 [H, W, 3] or float [H, W, 3] in [0, 1]; None when
        it cannot be re-loaded (the overlay then shows the mask alone).
      baseline: the baseline image, same forms as `image`, or None.
      panels: which of `PANELS` to draw, in order.
      title: the figure's title; `note`: a line under it (e.g. why there is no image).
      baseline_title: the baseline panel's title (e.g. "Baseline (black)").
      image_note: why `image` is None, in a few words ("image not found where the run
        read it"), drawn in its panel and in a baseline's made from it (blur).
      cmap, overlay_alpha: the mask's colour map and the photo's opacity on it.
      panel_size: inches per panel; `columns`: panels per row (default all in one row).
    """
    mask = attribution_mask(attributions)
    broken = _map_note(attributions, "drawn at the top of the mask")
    note = "\n".join(t for t in (note, broken) if t) or None
    columns = columns or len(panels)
    rows = math.ceil(len(panels) / columns)
    height = panel_height(mask.shape, panel_size) * rows
    figure = _figure(panel_size * columns, height + (0.5 if title or note else 0))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=False):
        _draw_panel(ax, panel, mask, image, baseline, cmap, overlay_alpha, image_note)
        heading = _TITLES[panel]
        if panel == "baseline" and baseline_title:
            heading = _heading(baseline_title)
        if panel == "overlay" and image is None:
            heading = "Attribution mask\n(magnitude; no image)"
        ax.set_title(heading, fontsize=9, parse_math=False)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    if title or note:
        figure.suptitle(_wrapped([title, note], panel_size * columns), fontsize=9, parse_math=False)
    return figure


def panel_height(shape: tuple[int, ...], panel_size: float) -> float:
    """Inches of a line of panels of a map of `shape` ([H, W, ...]) drawn `panel_size`
    wide (`attribution_figure`'s, `channel_figure`'s, the sanity check's): a square's
    `panel_size`, or as tall as a map wider than tall, with its panel's title (in square
    panels, a 24 x 40 map left 42 % of a report's card blank, a 16 x 96 one 77 %)."""
    height, width = shape[:2]
    return min(panel_size, panel_size * height / max(width, 1) + 0.3)


def _heading(text: str) -> str:
    """A caller's title or note as a figure draws it: its control and format characters
    escaped as names are (`wording.printable`: a right-to-left override in a title
    reordered it), its own line breaks kept (a title of two lines)."""
    return wording.printable(str(text), lines=True)


def _wrapped(texts: Sequence[str | None], width: float) -> str:
    """Lines of `texts` (`_heading`s) wrapped to a figure `width` inches wide at 9
    points (about 13 characters an inch), so that a long title or note is not cut at
    the figure's edges; on whole escapes (`wording.wrapped`)."""
    chars = max(20, int(13 * width))
    lines = [line for text in texts if text for line in str(text).split("\n")]
    return "\n".join(part for line in lines for part in wording.wrapped(line, chars))


def channel_figure(
    attributions: np.ndarray,
    *,
    title: str | None = None,
    channel_names: Sequence[str] = ("red", "green", "blue"),
    cmap: str = "RdBu_r",
    panel_size: float = 2.6,
) -> Figure:
    """Signed attribution maps per colour channel, on one symmetric colour scale.

    Args:
      attributions: [H, W, C] (`--attributions full`), or [H, W] (`pixel`: one map,
        the channel sum). Red is positive (evidence for the target), blue negative;
        the scale is +-the 99th percentile of |a| (over the image, its padding left
        out, as in `attribution_mask`).
    """
    with np.errstate(over="ignore"):  # inf stays inf
        values = np.asarray(attributions, dtype=np.float32)
    if values.ndim == 2:
        values, channel_names = values[..., None], ("sum over channels",)
    if values.ndim != 3:
        raise ValueError(
            f"signed maps need [H, W, C] or [H, W] attributions, got {list(values.shape)}."
        )
    scaled = _scaled_part(values)
    finite = np.abs(scaled[np.isfinite(scaled)])
    limit = (float(np.percentile(finite, _CLIP_PERCENTILE)) if finite.size else 0.0) or 1.0
    channels = values.shape[-1]
    width = panel_size * channels + 0.8
    # Wrapped to the figure: audit_figure's one-line caption ran past both its edges.
    broken = _map_note(values, "inf at the ends of the scale, NaN blank")
    title = _wrapped([title, broken], width) or None
    names = [wording.printable(str(name)) for name in channel_names]
    if len(names) != channels:
        names = [f"channel {c}" for c in range(channels)]
    figure = _figure(width, panel_height(values.shape, panel_size) + (0.5 if title else 0))
    axes = figure.subplots(1, channels, squeeze=False).ravel()
    shown = None
    for c, ax in enumerate(axes):
        shown = ax.imshow(
            values[..., c], cmap=cmap, vmin=-limit, vmax=limit, interpolation=_SMOOTH_DOWN
        )
        total = values[..., c].sum(dtype=np.float64)
        ax.set_title(f"{names[c]}: sum {total:+.3g}", fontsize=9, parse_math=False)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.colorbar(shown, ax=list(axes), shrink=0.8, label="attribution")
    if title:
        figure.suptitle(title, fontsize=9, parse_math=False)
    return figure


def _draw_path_ends(ax: Axes, row: pd.Series, curve: tuple[np.ndarray, np.ndarray]) -> None:
    """F(x) and F(x') of one row as horizontal lines, where its path curve should end.

    With several baselines the stored path is the first baseline's, so its own
    F(x') (the curve at alpha 0) is drawn, and the row's mean over the baselines
    beside it."""
    ends = [(row["target_score"], "#444444", "--", "F(x), the image")]
    names = str(row.get("baseline") or "").split(",")
    alphas, scores = curve
    if len(names) > 1:
        if len(alphas) and alphas[0] == 0.0:  # rules with a node at the baseline
            label = f"F(x'), the {names[0]} baseline (this path)"
            ends.append((scores[0], "#888888", ":", label))
        ends.append((row["baseline_score"], "#bbbbbb", "-.", "F(x'), mean over the baselines"))
    else:
        ends.append((row["baseline_score"], "#888888", ":", "F(x'), the baseline"))
    for score, color, style, label in ends:
        ax.axhline(score, color=color, linestyle=style, linewidth=0.8, label=label)


def path_figure(
    rows: pd.Series | pd.DataFrame,
    *,
    title: str | None = None,
    width: float = 5.0,
    height: float = 3.2,
) -> Figure:
    """F(alpha) along the path from the baseline (alpha 0) to the image (alpha 1).

    One curve per row (rows need `path_alphas` and `path_scores`; rows without a
    stored path are skipped; with several baselines, the first baseline's path).
    With one row, F(x) and F(x') are drawn as dashed lines: IG's completeness
    error grows where the curve bends sharply between path points, and a flat
    curve near alpha 1 means the score saturated.
    """
    frame = rows.to_frame().T if isinstance(rows, pd.Series) else rows
    figure = _figure(width, height)
    ax = figure.subplots()
    drawn, curve = 0, None
    for _, row in frame.iterrows():
        curve = results.path_of(row)
        if curve is None:
            continue
        alphas, scores = curve
        label = "F(alpha)" if len(frame) == 1 else _curve_name(row)
        ax.plot(alphas, scores, marker=".", markersize=3, linewidth=1.2, label=label)
        drawn += 1
    if drawn == 0:
        _blank(ax, "no path stored for these rows")
    if len(frame) == 1 and drawn:
        _draw_path_ends(ax, frame.iloc[0], curve)
    score = str(frame["score"].iloc[0]) if "score" in frame and len(frame) else "score"
    ax.set_xlabel("alpha (0 = baseline, 1 = image)")
    ax.set_ylabel(f"F(alpha) ({score})")
    ax.set_xlim(0.0, 1.0)
    ax.grid(alpha=0.3)
    if 0 < drawn <= 8:
        for text in ax.legend(fontsize=7, loc="best").get_texts():  # file and class names
            text.set_parse_math(False)
    if title:  # less the y axis
        ax.set_title(_wrapped([title], width - 1.0), fontsize=9, parse_math=False)
    return figure


def _curve_name(row: pd.Series) -> str:
    """A path curve's name in a legend of several: its file and class, escaped as captions
    are (`shortened`) but not cut: the legend wraps them."""
    return " -> ".join(
        wording.printable(str(row[column])) for column in ("file_name", "target_name")
    )


def log_bins(values: np.ndarray, tolerance: float | None = None, count: int = _BARS) -> np.ndarray:
    """Log-spaced histogram bin edges chosen from the data and the tolerance.

    The edges run from a little below the smallest value to a little above the
    largest (the tolerance, when given, is inside that range too), `count` bars
    of equal log width across it. With a tolerance one edge sits on it (at the
    next float above, so that a row exactly at the tolerance, which is within
    it, falls left of the line): no bar straddles the tolerance line, and rows
    within it and rows above it are always in different bars.

    Args:
      values: finite values > 0, at least one.
      tolerance: the tolerance drawn on the histogram, or None (or 0) for none.
      count: the number of bars across the range (one or two more with a tolerance).

    Returns:
      float64 [bars + 1], increasing.
    """
    logs = np.log10(np.asarray(values, dtype=np.float64))
    low, high = float(logs.min()), float(logs.max())
    if tolerance:
        low, high = min(low, math.log10(tolerance)), max(high, math.log10(tolerance))
    pad = max(0.05 * (high - low), 0.02)  # decades: a little room beyond the extremes
    low, high = low - pad, high + pad
    if not tolerance:
        return np.logspace(low, high, count + 1)
    width = (high - low) / count
    edge = float(np.nextafter(tolerance, np.inf))
    below = math.ceil((math.log10(edge) - low) / width)
    above = math.ceil((high - math.log10(edge)) / width)
    return edge * 10.0 ** (np.arange(-below, above + 1) * width)


def _log_histogram(
    values: Sequence[float] | np.ndarray,
    tolerance: float | None,
    xlabel: str,
    width: float,
    height: float,
    line: str = "tolerance",
) -> Figure:
    """A log-scaled histogram of relative errors (>= 0) with the tolerance as a line
    (named `line` in the legend).

    Relative errors span decades (1e-6 for a converged row, 0.3 for a poor one), so
    the bins are logarithmic (`log_bins`: across the data, with an edge on the
    tolerance); values below `_FLOOR` (exact zeros: a map exact to float precision)
    are drawn at it, and the legend says how many. NaN are left out and counted in the
    legend as without a value, infinite values (a float16 overflow) as off the
    scale and above the tolerance, so every row is accounted for.
    """
    _check_width(width)
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    figure = _figure(width, height)
    ax = figure.subplots()
    if finite.size == 0:
        infinite = int(np.isinf(values).sum())
        off = f"{wording.count(infinite, 'row')} infinite (off the scale)"
        _blank(ax, off if infinite else "no rows")
        return figure
    _draw_bars(ax, finite, tolerance, xlabel)
    if tolerance:
        _draw_tolerance(ax, values, tolerance, line)
    _note_left_out(ax, values)
    _legend_above(ax)
    _fit_xlabel(ax)
    _tall_enough(ax)
    ax.grid(alpha=0.3)
    _thin_tick_labels(ax)
    return figure


def _check_width(
    width: float,
    smallest: float = _MIN_WIDTH,
    what: str = "an error histogram: its row counts and legend",
    usual: float = 6.0,
) -> None:
    """Refuses a figure (`what` needs the room) narrower than `smallest` inches (a
    ValueError naming the width the report draws, `usual`)."""
    if not width >= smallest:
        raise ValueError(
            f"width {width:g} inches is too narrow for {what} need at least "
            f"{smallest:g} inches (the report draws {usual:g})."
        )


def _draw_bars(ax: Axes, finite: np.ndarray, tolerance: float | None, xlabel: str) -> None:
    """The bars of the `finite` errors (float64 [n], >= 0), those below `_FLOOR` drawn
    at it, in `log_bins` with an edge on the `tolerance`, on a log x axis."""
    clipped = np.maximum(finite, _FLOOR)
    ax.hist(
        clipped,
        bins=log_bins(clipped, tolerance),
        color="#4c72b0",
        label=wording.count(finite.size, "row"),
    )
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    ax.yaxis.get_major_locator().set_params(integer=True)


def _draw_tolerance(ax: Axes, values: np.ndarray, tolerance: float, line: str) -> None:
    """The `tolerance` as a dashed line, named `line` in the legend with the rows of
    `values` (float64 [n], NaN left out, infinite ones counted) above it."""
    above = int((values[~np.isnan(values)] > tolerance).sum())
    ax.axvline(
        tolerance,
        color=_WRONG,
        linestyle="--",
        linewidth=1,
        label=f"{line} {tolerance:g}: {wording.count(above, 'row')} above",
    )


def _note_left_out(ax: Axes, values: np.ndarray) -> None:
    """Legend lines for the rows of `values` (float64 [n]) not drawn where their value
    is: below `_FLOOR`, infinite, NaN."""
    finite = values[np.isfinite(values)]
    infinite = int(np.isinf(values).sum())
    _note_rows(
        ax, int((finite < _FLOOR).sum()), f"below {_FLOOR:g} (0 included), drawn at {_FLOOR:g}"
    )
    _note_rows(ax, infinite, "infinite (off the scale)")
    _note_rows(ax, values.size - finite.size - infinite, "without a value")


def _fit_xlabel(ax: Axes) -> None:
    """Wraps the x axis's label to the width it has under the axes, centred on them
    as the last layout (`_legend_above`'s) put them, inside the figure.

    On one line, "relative completeness error |delta| / |F(x) - F(x')|" (3.5 inches
    at 10 points) ran past the right edge of a 3-inch histogram and both of a 2-inch one.
    Beside another panel, it ends halfway across the gap between them, and short of
    the labels of that panel's y axis.
    """
    figure = ax.figure
    renderer = figure.canvas.get_renderer()
    box, edges = ax.get_window_extent(renderer), figure.bbox
    pad = figure.get_layout_engine().get()["w_pad"] * figure.dpi
    left, right = edges.x0 + pad, edges.x1 - pad
    for other in figure.axes:  # a panel beside: up to halfway across the gap
        near = other.get_window_extent(renderer)
        if other is not ax and near.y0 < box.y1 and box.y0 < near.y1:
            if near.x1 <= box.x0:
                left = max(left, (near.x1 + box.x0) / 2)
            elif near.x0 >= box.x1:  # and short of its y axis's labels
                labels = other.yaxis.get_tightbbox(renderer)
                right = min(right, (box.x1 + near.x0) / 2, labels.x0 - pad if labels else right)
    centre = (box.x0 + box.x1) / 2
    room = 2 * min(centre - left, right - centre)
    label = ax.xaxis.label
    _wrap_to(label, lambda: label.get_window_extent(renderer).width <= room)


def _tall_enough(ax: Axes, smallest: float = _MIN_AXES_HEIGHT, title: Text | None = None) -> None:
    """Makes the figure taller, where it is too short, so that `ax` are `smallest` inches
    tall besides their legend above, tick and axis labels below, the figure's `title`
    (the Text `suptitle` returned) and the layout's pads.

    In a figure shorter than those needed, the layout gave the axes what was left: 35
    pixels of a 3 x 2-inch histogram whose legend wrapped to many lines, and in a 2 x 2
    one nothing ("axes sizes collapsed to zero"), the legend then above the picture.
    Their heights do not depend on the axes', so they are measured wherever the last
    layout (`_legend_above`'s) left the axes, collapsed or not. The title is counted
    above them; of several panels side by side, the figure is made tall enough for each.
    """
    figure = ax.figure
    renderer = figure.canvas.get_renderer()
    box, outer = ax.get_window_extent(renderer), ax.get_tightbbox(renderer)
    legend = ax.get_legend()
    top = max(outer.y1, legend.get_window_extent(renderer).y1) if legend else outer.y1
    pad = figure.get_layout_engine().get()["h_pad"]
    around = (top - outer.y0 - box.height) / figure.dpi + 2 * pad  # the figure's edges
    if title is not None and title.get_text():  # above it all, padded as the layout does
        around += title.get_window_extent(renderer).height / figure.dpi + 2 * pad
    if figure.get_figheight() < around + smallest:  # to a whole pixel at the page's 100 dpi
        figure.set_figheight(math.ceil((around + smallest) * 100) / 100)


def _legend_above(ax: Axes, columns: int = 2, size: float = 8.0) -> None:
    """The legend above the axes from their left edge, in `columns` columns if that fits
    in their width, else in 1 with its lines wrapped to fit, at `size` points or, where
    lines of `_wrap_to`'s shortest are still too wide, smaller.

    Above: inside ("best" too), it hid bars of a run of a few rows, all as tall. No
    wider than the axes: one that ran past their right edge made the constrained
    layout narrow the axes, which only widened the overhang, so each layout (each
    save) drew them narrower: 0.58, 0.49 then 0.39 of a 6-inch figure with five lines,
    nothing at 5 inches (and 0.24, 0.12 then 0.004 of a 2-inch one, its lines wrapped
    as far as they go). Fitted, it only sets the room above them.
    """
    legend = _legend(ax, columns, size)
    legend.set_in_layout(False)
    figure = ax.figure
    figure.get_layout_engine().execute(figure)  # the axes' width without it
    _fit_legend(ax, legend, size)


def _fit_legend(ax: Axes, legend: Legend, size: float) -> None:
    """`legend`, above `ax`, drawn again in one column wrapped to their width as the
    last layout left it, at `size` points or smaller (`_shrunk_to`), where it is wider;
    in the layout only if it fits."""
    renderer = ax.figure.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    if legend.get_window_extent(renderer).x1 > box.x1:
        legend = _legend(ax, 1, size)
        over = legend.get_window_extent(renderer).x1 - box.x1
        texts = legend.get_texts()
        room = max(text.get_window_extent(renderer).width for text in texts) - over
        for text in texts:  # only those wider than the room
            _wrap_to(text, lambda t=text: t.get_window_extent(renderer).width <= room)
        legend = _shrunk_to(legend, box, renderer)
    # Out of the layout if even the smallest font overhangs: the axes keep their width.
    legend.set_in_layout(legend.get_window_extent(renderer).x1 <= box.x1)


def _shrunk_to(legend: Legend, box: Any, renderer: Any, smallest: float = 1.0) -> Legend:
    """`legend` (of one column), drawn again in a font small enough that it ends at the
    axes' right edge `box.x1`, if it does not: its texts, marks and pads all scale with
    its font size, so its width from the axes' left edge does too."""
    size = legend.get_texts()[0].get_fontsize()
    lines = [text.get_text() for text in legend.get_texts()]
    while legend.get_window_extent(renderer).x1 > box.x1 and size > smallest:
        width = legend.get_window_extent(renderer).x1 - box.x0
        size = max(smallest, min(size - 0.25, size * (box.x1 - box.x0) / width))
        legend = _legend(legend.axes, 1, size)
        for text, line in zip(legend.get_texts(), lines, strict=True):
            text.set_text(line)  # as wrapped at the legend's first size
    return legend


def _legend(ax: Axes, columns: int, size: float = 8.0) -> Legend:
    return ax.legend(
        fontsize=size, loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False, ncols=columns
    )


def _wrap_to(text: Text, fits: Callable[[], bool], shortest: int = 12) -> None:
    """Wraps `text` at fewer characters a line until `fits()` or lines of `shortest`."""
    words = text.get_text()
    chars = len(words)
    while not fits() and chars > shortest:
        chars -= 1
        text.set_text(textwrap.fill(words, chars))


class _Kept(Formatter):
    """A tick formatter that gives `inner`'s labels at the `kept` values and none elsewhere."""

    def __init__(self, inner: Formatter, kept: np.ndarray) -> None:
        super().__init__()
        self.inner, self.kept = inner, kept
        # How close a tick is to a kept value: np.isclose's test (rtol 1e-9, atol 0) in
        # the same float arithmetic, without its cost per call: every layout and draw
        # formats each tick again, and np.isclose took a sixth of such a layout.
        self._near = [(float(k), 1e-9 * abs(float(k))) for k in kept]

    def _is_kept(self, value: float) -> bool:
        value = float(value)
        return any(abs(value - k) <= near for k, near in self._near)

    def format_ticks(self, values: Sequence[float]) -> list[str]:
        labels = self.inner.format_ticks(values)  # the inner formatter's own choice first
        return [label if self._is_kept(v) else "" for v, label in zip(values, labels, strict=True)]

    def __call__(self, x: float, pos: int | None = None) -> str:
        return self.inner(x, pos) if self._is_kept(x) else ""


def _thin_tick_labels(ax: Axes, gap: float = 4.0) -> None:
    """Leaves out the x tick labels that would run into a neighbour.

    A log axis spanning less than a decade or two labels its minor ticks too, and at a
    histogram's width they touched: "3×10⁻³4×10⁻³". Lays the figure out once, then keeps
    the labels (powers of ten first, then the others from the left) that clear those
    kept by `gap` pixels."""
    figure = ax.figure
    figure.get_layout_engine().execute(figure)  # the axes where the figure's draw puts them
    renderer = figure.canvas.get_renderer()
    # Their tick labels there: `get_ticklabels` updates the ticks, and a label's box is
    # where its tick and the axes are now (a tight box of the axes, for that alone, was
    # 0.01 s of a histogram's 0.25).
    low, high = sorted(ax.get_xlim())
    shown = [
        (loc, label.get_window_extent(renderer))
        for minor in (False, True)
        for loc, label in zip(
            ax.xaxis.get_ticklocs(minor=minor), ax.xaxis.get_ticklabels(minor=minor), strict=False
        )
        if label.get_visible() and label.get_text() and low <= loc <= high
    ]
    kept: list[tuple[float, Any]] = []
    for loc, box in shown:
        if all(box.x1 + gap <= other.x0 or other.x1 + gap <= box.x0 for _, other in kept):
            kept.append((loc, box))
    values = np.array([loc for loc, _ in kept], dtype=np.float64)
    ax.xaxis.set_major_formatter(_Kept(ax.xaxis.get_major_formatter(), values))
    ax.xaxis.set_minor_formatter(_Kept(ax.xaxis.get_minor_formatter(), values))


def _note_rows(ax: Axes, rows: int, what: str) -> None:
    """A legend line without a mark: `rows` rows that are not in the bars, or not where
    their value is, and why."""
    if rows:
        ax.plot([], [], " ", label=f"{wording.count(rows, 'row')} {what}")


def completeness_figure(
    relative_delta: Sequence[float] | np.ndarray,
    tolerance: float | None = None,
    *,
    width: float = 6.0,
    height: float = 3.0,
) -> Figure:
    """Histogram of the relative completeness error |delta| / |F(x) - F(x')|, log-scaled.

    Args:
      relative_delta: one value per row (>= 0; NaN are left out and counted).
      tolerance: the run's `--completeness_tolerance`, drawn as a vertical line when > 0.
      width, height: the figure's size in inches; `width` at least 2 (a ValueError);
        taller than `height` where the legend needs it (`_tall_enough`).
    """
    label = "relative completeness error |delta| / |F(x) - F(x')|"
    return _log_histogram(relative_delta, tolerance, label, width, height)


def attribution_error_figure(
    attribution_error: Sequence[float] | np.ndarray,
    tolerance: float | None = None,
    *,
    width: float = 6.0,
    height: float = 3.0,
) -> Figure:
    """Histogram of the estimated per-pixel relative error ||A - A_true|| / ||A_true||.

    Args:
      attribution_error: the `attribution_error` column, one value per row (>= 0;
        NaN are left out and counted).
      tolerance: the run's bound on it (the manifest's `estimate_bound`: its
        `--tolerance` over the estimate's margin), drawn as a vertical line when > 0.
      width, height: the figure's size in inches; `width` at least 2 (a ValueError);
        taller than `height` where the legend needs it (`_tall_enough`).
    """
    label = "estimated per-pixel error ||A - A_true|| / ||A_true||"
    return _log_histogram(attribution_error, tolerance, label, width, height, "bound")


#: The faithfulness columns: IG's area under the curve and its random-ranking control.
_AUCS = {
    "deletion": ("deletion_auc", "deletion_auc_random", "lower is better"),
    "insertion": ("insertion_auc", "insertion_auc_random", "higher is better"),
}


def faithfulness_figure(
    frame: pd.DataFrame,
    *,
    width: float = 9.0,
    height: float = 3.0,
    empty: str = "no IG AUCs in these rows",
) -> Figure:
    """Distributions of the deletion and insertion AUCs, IG's ranking against a random one.

    Args:
      frame: rows with `deletion_auc`, `insertion_auc`, `deletion_auc_random` and
        `insertion_auc_random` (float in [0, 1]; null rows are left out).
      empty: the note of a panel whose IG AUCs are all null; the default names no
        reason, as it may be any: --faithfulness none, the model's NaN on every such
        curve, a caller's nulling the rows that are no trial of that check.

    A faithful map removes the evidence fastest (deletion: IG's histogram left of the
    random one) and restores it fastest (insertion: IG's histogram to the right).
    `width` is at least 4 inches (a ValueError); the figure is drawn taller than
    `height` where the legends need it (`_tall_enough`).
    """
    _check_width(width, _MIN_FAITHFULNESS_WIDTH, "a faithfulness figure: its two panels", 9.0)
    figure = _figure(width, height)
    panels = figure.subplots(1, 2)
    for ax, (curve, columns) in zip(panels, _AUCS.items(), strict=True):
        _auc_panel(ax, frame, curve, columns, empty)
    # Above the axes (inside, the legend hid the bars it describes), no wider than them:
    # one of their width at 9 inches ran into the other panel at 5 and, in the layout,
    # shrank its own axes to nothing at 4.
    _fit_legends_above(list(panels), height)
    return figure


def _fit_legends_above(
    panels: list[Axes], height: float, room: float = 3.0, title: Text | None = None
) -> None:
    """Each panel's legend above it (`_legend_above`: one column at 7 points, wrapped or
    smaller where it is too wide), its x label wrapped to its width (`_fit_xlabel`) and
    the figure `height` inches tall, or taller where that leaves a panel under 1.5
    below the figure's `title` (`_tall_enough`).

    The legends are fitted in a figure at least `room` inches tall: at 1 inch the
    layout collapsed, the axes' widths unknown. And again where, at the figure's last
    height and with the legend in the layout, one no longer fits: the y ticks
    matplotlib picks change with the axes' height ("0.0" to "0.00"), and their width
    with their labels.
    """
    figure = panels[0].figure
    figure.set_figheight(max(height, room))
    for ax in panels:
        _legend_above(ax, columns=1, size=7.0)
    figure.set_figheight(height)
    for _ in range(4):
        for ax in panels:
            _fit_xlabel(ax)
            _tall_enough(ax, _as_tall_as_ylabel(ax), title)
        if _settled(panels):
            break
        for ax in panels:  # fitted again to the axes as they are now, legend in the layout
            _fit_legend(ax, ax.get_legend(), 7.0)
    _from_the_start(panels)


def _settled(panels: list[Axes]) -> bool:
    """Lays the figure out until it no longer moves (at most 3 times) and says whether
    every panel's legend fits (`_legend_fits`); where a panel is too short there, makes
    the figure taller by what it lacks and says False."""
    figure = panels[0].figure
    engine, renderer = figure.get_layout_engine(), figure.canvas.get_renderer()
    for _ in range(3):
        before = [ax.get_position().bounds for ax in panels]
        engine.execute(figure)
        if [ax.get_position().bounds for ax in panels] == before:
            break
    short = max(
        _as_tall_as_ylabel(ax) - ax.get_window_extent(renderer).height / figure.dpi for ax in panels
    )
    if short > 0:
        figure.set_figheight(math.ceil((figure.get_figheight() + short) * 100) / 100)
        return False
    return all(_legend_fits(ax, renderer) for ax in panels)


def _from_the_start(panels: list[Axes]) -> None:
    """The panels where `subplots` placed them, if the layout from there fits their
    legends too, else where the last layout left them: a save lays them out from there.

    A layout's result depends, in its last bits, on where it starts: laid out from
    where the fitting left them, the report's 9 x 3-inch figure moved an edge by a
    fraction of a pixel. From the start, a figure the fitting did not change is the
    same, byte for byte, as one it never fitted.
    """
    figure = panels[0].figure
    fitted = [ax.get_position(original=False) for ax in panels]
    placed = [ax.get_subplotspec().get_position(figure) for ax in panels]
    for ax, box in zip(panels, placed, strict=True):
        _place(ax, box)
    figure.get_layout_engine().execute(figure)
    renderer = figure.canvas.get_renderer()
    usable = all(
        _legend_fits(ax, renderer)
        and ax.get_window_extent(renderer).height >= _as_tall_as_ylabel(ax) * figure.dpi
        for ax in panels
    )
    for ax, box in zip(panels, placed if usable else fitted, strict=True):
        _place(ax, box)


def _place(ax: Axes, box: Any) -> None:
    """`ax` at `box` (figure coordinates), left in the layout, which lays them out
    from there: `set_position` takes them out of it (as placed by hand), so they are
    put back."""
    ax.set_position(box)
    ax.set_in_layout(True)


def _as_tall_as_ylabel(ax: Axes) -> float:
    """Inches `ax` keep at least: `_MIN_AXES_HEIGHT`, or their y label's length where it
    is longer. A label longer than the axes stuck out above and below them, each layout
    made room for it and left the axes shorter (1.5 inches, then 1.27, of a 2-inch
    curves figure whose label, "probability / p(x), capped at 1", is 1.69 long)."""
    label = ax.yaxis.label.get_window_extent(ax.figure.canvas.get_renderer())
    return max(_MIN_AXES_HEIGHT, math.ceil(label.height) / ax.figure.dpi)


def _legend_fits(ax: Axes, renderer: Any) -> bool:
    """Whether `ax`'s legend ends by their right edge, as `_legend_above` fits it."""
    return ax.get_legend().get_window_extent(renderer).x1 <= ax.get_window_extent(renderer).x1


def _auc_panel(
    ax: Axes, frame: pd.DataFrame, curve: str, columns: tuple[str, str, str], empty: str
) -> None:
    """The `curve`'s ("deletion" or "insertion") histograms of IG's AUCs and of the
    random control's (`columns`: theirs and which is better), or `empty` where IG has none."""
    ig, control, better = columns
    bins = np.linspace(0.0, 1.0, 21)
    # The control as an outline over IG's filled bars, so both stay readable.
    for column, name, style in (
        (control, "random ranking", {"histtype": "step", "color": "#555555"}),
        (ig, "IG", {"histtype": "stepfilled", "color": "#4c72b0", "alpha": 0.6}),
    ):
        values = frame[column].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        median = f", median {np.median(values):.3f}" if values.size else ""
        label = f"{name} ({wording.count(values.size, 'row')}{median})"
        ax.hist(values, bins=bins, linewidth=1.4, label=label, **style)
    if not frame[ig].notna().any():
        _blank(ax, empty)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel(f"{curve} AUC ({better})")
    ax.set_ylabel("rows")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)


def faithfulness_curves_figure(
    row: Any, *, title: str | None = None, width: float = 3.6, height: float = 2.7
) -> Figure:
    """A row's deletion and insertion curves, drawn as their AUCs measure them.

    Args:
      row: a result row (`df.iloc[i]`, a dict or a named tuple of `df.itertuples()`)
        with `deletion_curve` and `insertion_curve` (float32 [K + 1] probabilities in
        [0, 1], step 0 = nothing removed / revealed) and the AUCs. Rows without
        stored curves draw a note instead.

    Each curve is drawn relative to the image's own probability p(x) and capped at 1,
    clip(p_k / p(x), 0, 1), so that the area under a drawn curve is the AUC its legend
    gives; where p(x) is unknown or 0 (its AUCs are null), the probabilities themselves.
    `width` is at least 2 inches (a ValueError); the figure is drawn taller than
    `height` where the legend and title need it, the plot at least 1.5 inches tall.
    """
    _check_width(width, _MIN_WIDTH, "a faithfulness curves figure: its legend and labels", 3.6)
    curves = _stored_curves(row)
    reference = faithfulness.image_probability(curves.get("deletion"), curves.get("insertion"))
    figure = _figure(width, height)
    ax = figure.subplots()
    for curve, values in curves.items():
        _draw_curve(ax, row, curve, values, reference)
    _curve_axes(ax, reference)
    # Over the figure (the legend sits right above the axes); kept, as Figure has no
    # public getter of the Text: the figure is made tall enough for it.
    heading = figure.suptitle(_heading(title), fontsize=9, parse_math=False) if title else None
    if not curves:
        _blank(ax, "no deletion / insertion curves stored")
        _fit_xlabel(ax)
        _tall_enough(ax, title=heading)
    else:  # above the axes, where it cannot hide a curve, no wider than them
        _fit_legends_above([ax], height, room=2.7, title=heading)
    return figure


def _stored_curves(row: Any) -> dict[str, np.ndarray]:
    """The row's stored curves by name ("deletion", "insertion"; float64 [K + 1]),
    those missing or empty left out."""
    curves = {}
    for curve in _AUCS:
        values = results.cell(row, f"{curve}_curve", None)
        if not results.is_missing(values) and len(values):
            curves[curve] = np.asarray(values, dtype=np.float64)
    return curves


def _draw_curve(
    ax: Axes, row: Any, curve: str, values: np.ndarray, reference: float | None
) -> None:
    """The `curve` ("deletion" or "insertion") of `row`, its `values` (float64 [K + 1])
    over the image's probability `reference` where it is known (not 0 or None), named
    with its AUC and its random control's."""
    column, control, _ = _AUCS[curve]
    if reference:
        values = faithfulness.normalised(values[None], np.array([reference]))[0]
    ax.plot(
        np.linspace(0.0, 1.0, values.size),
        values,
        marker=".",
        markersize=3,
        linewidth=1.2,
        label=f"{curve}: AUC {_fmt(results.cell(row, column, None))} "
        f"(random {_fmt(results.cell(row, control, None))})",
    )


def _curve_axes(ax: Axes, reference: float | None) -> None:
    """Limits, labels and grid of a curves figure, the y axis's naming `reference`,
    the image's probability the curves are drawn over, where it is known."""
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("fraction of the image's pixels removed / revealed", fontsize=8)
    ylabel = "probability of the target"
    if reference:
        # Two lines: on one, the label ran past the figure's ends under a title.
        ylabel = f"probability / p(x), capped at 1\np(x) = {reference:.3g}"
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(alpha=0.3)


def _fmt(value: Any) -> str:
    return "-" if results.is_missing(value) else f"{float(value):.3f}"


def shortened(text: str, width: int = 28) -> str:
    """A name (file, image, class, layer) as a figure's caption draws it: its control
    and format characters escaped as the terminal and the page show them
    (`wording.printable`: a right-to-left override reordered the caption, a newline
    split it), cut to `width` characters, its last an ellipsis where it was cut (it
    would otherwise run past its panel), never inside an escape (`wording.shortened`:
    'x\\u20…' named no character)."""
    return wording.shortened(text, width)


def row_title(
    row: Any, width: int = 28, *, by_id: bool = False, one_output: bool = False
) -> tuple[str, bool]:
    """A short caption of a row and whether it is a misclassification.

    "file / pred: name (p%) / label: name"; names escaped and cut to `width` (`shortened`).
    `by_id`: name the image by its `image_id` (cut at its start, keeping the file
    name), for a file name that other images of the figure share. `one_output`: a
    row of a model of one output, "file / score: target_score / label: name", the
    label only where the dataset names it (`_score_lines`), never a misclassification.
    """

    def cut(text: Any) -> str:
        return shortened("-" if results.is_missing(text) else str(text), width)

    name = cut(row["file_name"])
    if by_id:
        name = wording.shortened(str(row["image_id"]), width, keep="end")
    if one_output:
        return "\n".join([name, *_score_lines(row, cut)]), False
    probs = row["top_k_probs"]
    confidence = (
        f" ({wording.probability(float(probs[0]))})" if probs is not None and len(probs) else ""
    )
    lines = [name, f"pred: {cut(row['predicted_name'])}{confidence}"]
    label = row["label"]
    labelled = not results.is_missing(label)
    if labelled:
        lines.append(f"label: {cut(row['label_name'])}")
    if row["target_class"] != row["predicted_class"]:
        lines.append(f"attributed: {cut(row['target_name'])}")
    wrong = labelled and int(row["predicted_class"]) != int(label)
    return "\n".join(lines), wrong


def _score_lines(row: Any, cut: Callable[[Any], str]) -> list[str]:
    """A one-output row's caption lines: its score (the output, `target_score`), as its
    predicted class 0 at probability 1 says nothing; and its label by the dataset's
    name (a TFDS dataset's 'cat'), none where that name is only the label's index (a
    WordNet-id folder's '281' on a model without ImageNet's names)."""
    score = row["target_score"]
    lines = [f"score: {'-' if results.is_missing(score) else wording.score(score)}"]
    label, name = row["label"], row["label_name"]
    if not results.is_missing(label) and not results.is_missing(name):
        if str(name) != str(int(label)):
            lines.append(f"label: {cut(name)}")
    return lines


def grid_figure(
    rows: pd.DataFrame,
    images: Mapping[str, np.ndarray] | None = None,
    *,
    panel: str = "overlay",
    columns: int = 4,
    panel_size: float = 2.4,
    title: str | None = None,
    misclassified_red: bool = True,
    one_output: bool = False,
) -> Figure:
    """Many rows at a glance: one heat map (or overlay) per row, captioned.

    Args:
      rows: result rows read with arrays (`read_results(..., with_arrays=True)`).
      images: input images by `image_id` (`results.input_images`); rows without
        one show the mask alone, rows without attributions (read without arrays,
        or `--attributions none`) the image alone, captioned so.
      panel: `overlay`, `mask` or `image` (see `PANELS`).
      columns: cells per line. Misclassified rows have red captions; a file name
        that several images of `rows` share is captioned by their `image_id`s.
      misclassified_red: False: no caption is red, for rows of a model of one output,
        whose predicted class 0 is no class to compare a label with.
      one_output: the rows are of a model of one output: captioned by its score, not
        by a prediction of class 0 at probability 1 (`row_title`), and none red.

    Raises:
      ValueError: `rows` holds more than `GRID_MAX_ROWS` rows (pick the rows to draw).
    """
    if len(rows) > GRID_MAX_ROWS:
        raise ValueError(
            f"grid_figure draws at most {GRID_MAX_ROWS} rows, one panel each; got "
            f"{len(rows)}: pass rows.head({GRID_MAX_ROWS}), or the rows you want to see "
            "(a grid of 2,000 took minutes and never saved)."
        )
    images = images or {}
    count = max(len(rows), 1)
    columns = max(1, min(columns, count))
    lines = math.ceil(count / columns)
    height = panel_size * _wide_ratio(rows, images)
    figure = _figure(panel_size * columns, (height + 0.7) * lines + (0.4 if title else 0))
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    images_per_name = rows.groupby("file_name")["image_id"].nunique() if len(rows) else {}
    shared = {name for name, count in dict(images_per_name).items() if count > 1}
    for ax, (_, row) in zip(axes, rows.iterrows(), strict=False):
        by_id = row["file_name"] in shared
        red = misclassified_red and not one_output
        _grid_cell(ax, row, images.get(row["image_id"]), panel, by_id, red, one_output)
    for ax in axes[len(rows) :]:
        ax.set_axis_off()
    if title:
        figure.suptitle(_heading(title), fontsize=10, parse_math=False)
    return figure


def _wide_ratio(rows: pd.DataFrame, images: Mapping[str, np.ndarray]) -> float:
    """Height over width of the maps (or else the images) of `rows`, at most 1: a model
    wider than tall (24 x 40) has its pictures fill the width of a cell, and a square
    cell would leave the rest of its height blank (half of a gallery's rows were)."""
    shapes = [s for s in rows.get("attribution_shape", []) if not results.is_missing(s)]
    shapes += [image.shape for image in images.values()]
    if not shapes:
        return 1.0
    height, width = (int(side) for side in shapes[0][:2])
    return min(1.0, height / width)


def _grid_cell(
    ax: Axes,
    row: Any,
    image: np.ndarray | None,
    panel: str,
    by_id: bool,
    red: bool,
    one_output: bool = False,
) -> None:
    """One row's cell of `grid_figure`: its map as `panel` (the photo alone, or a blank,
    where no attributions are stored), captioned (by image id when `by_id`; in red when
    misclassified and `red`; by its score when `one_output`)."""
    try:
        stored = results.attributions_of(row)
        mask = attribution_mask(stored)
    except ValueError:
        stored = mask = None
    if mask is not None:
        _draw_panel(ax, panel, mask, image, None, "inferno", 0.4)
    elif image is not None:
        _draw_panel(ax, "image", np.zeros(image.shape[:2]), image, None, "inferno", 0.4)
    else:
        _blank(ax, "no attributions stored")
        ax.set_xticks([])
        ax.set_yticks([])
    caption, wrong = row_title(row, by_id=by_id, one_output=one_output)
    if mask is None and image is not None:  # the photo alone: say there is no map
        caption += "\n(no attributions stored)"
    caption += _grid_note(stored)
    ax.set_title(caption, fontsize=7, color=_WRONG if wrong and red else "black", parse_math=False)


def _grid_note(stored: np.ndarray | None) -> str:
    """A gallery caption's last line on a map drawn not as it is (`_map_note`, short)."""
    if stored is None:
        return ""
    bad = _not_finite(stored)
    if bad:
        return f"\n({wording.count(bad, 'value')} not finite: drawn at the top)"
    return "\n(map 0 everywhere)" if _is_zero(stored) else ""


#: What `audit_figure` draws of a row.
_KINDS: tuple[str, ...] = ("attributions", "channels", "path")


def audit_figure(
    output: str,
    image: Any,
    kind: str = "attributions",
    target_class: int | None = None,
    image_root: str | None = None,
) -> Figure:
    """The figure of one image of a run, read from its output folder.

    Args:
      output: the run's `--output` folder.
      image: the image's `image_id` or file name, or a row of `read_results`
        (`meta.iloc[i]`: that row's target).
      kind: `attributions` (the seed's baseline / original / mask / overlay),
        `channels` (signed maps: per channel, or the channel sum of a `pixel` run) or
        `path` (F(alpha)).
      target_class: with several rows per image, which target (default the row's
        own, else the prediction).
      image_root: where the run's image folder is now, if it moved.
    """
    if kind not in _KINDS:  # before anything is read: the error is the argument's
        raise ValueError(f"kind {kind!r} is not one of: {', '.join(_KINDS)}.")
    row = results.read_row(output, image, target_class)
    manifest = results.read_manifest(output)
    caption, _ = row_title(row, width=60, one_output=has_one_output(manifest))
    title = caption.replace("\n", " | ") + f" | rel. delta {row['relative_delta']:.2%}"
    if kind == "path":
        return path_figure(row, title=title)
    attributions = results.attributions_of(row)
    if kind == "channels":
        return channel_figure(attributions, title=title)
    picture, note, missing = None, None, None
    try:
        picture = results.load_input_image(manifest, row["image_id"], image_root)
    except results.ImageUnavailable as e:
        note = f"No photo: {wording.printable(str(e))}"  # it names the file
        missing = e.short
    names = list(manifest["config"]["baselines"])
    # A constant or noise baseline needs no photo; a blur one is None without it.
    baseline = results.baseline_image(manifest, picture, row["image_id"], names[0])
    baseline_title = f"Baseline ({names[0]})" + (" (first of averaged)" if len(names) > 1 else "")
    return attribution_figure(
        attributions,
        picture,
        baseline,
        title=title,
        note=note,
        baseline_title=baseline_title,
        image_note=missing,
        columns=2,
    )
