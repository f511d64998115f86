"""Charts of units: per-layer unit health bars and a correlation heat map (diagnose, microscope).

matplotlib is imported only when a figure is drawn (figures.new_figure); files are written
atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnntool.io.figures import new_figure, save_figure
from cnntool.io.untrusted import plot_text

HEATMAP_MAX_UNITS = 256  # a wider layer shows its first 256 units (the title says so)


def save_unit_bars(
    path: str | Path,
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
) -> None:
    """Grouped horizontal bars: one row per layer, one bar per series (shares in [0, 1];
    None = not applicable, drawn as no bar)."""
    figure = new_figure(width=9.0, height=1.6 + 0.26 * len(labels))
    axes = figure.add_subplot(1, 1, 1)
    rows = np.arange(len(labels))
    height = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        shown = np.array([np.nan if v is None else 100.0 * v for v in values], dtype=float)
        axes.barh(
            rows + (k - (len(series) - 1) / 2) * height,
            np.nan_to_num(shown),
            height=height,
            label=plot_text(name),
        )
    axes.set_yticks(rows, [plot_text(label) for label in labels], fontsize=7)
    axes.set_ylim(len(labels) - 0.5, -0.5)  # first layer on top, no empty margins
    axes.set_xlim(0, 100)
    axes.set_xlabel("% of the layer's units (sparsity: % of samples ≤ 0, averaged over units)")
    axes.grid(axis="x", alpha=0.3)
    # above the bars, beside nothing: a legend inside would hide the last layers
    axes.legend(
        fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(series), frameon=False
    )
    axes.set_title(plot_text(title), fontsize=10, pad=18)
    figure.tight_layout()
    save_figure(figure, path)


def save_correlation_heatmap(path: str | Path, correlation: np.ndarray, *, title: str) -> None:
    """Pearson r between units as a heat map in figure_style's diverging colours (blue −1,
    white 0, red +1) with a labelled colour bar; a pair with no r (a constant unit: NaN) is
    hatched grey and the legend says so, so it cannot pass for r ≈ 0."""
    from matplotlib.patches import Patch, Rectangle

    from cnntool.io.figure_style import DIVERGING

    shown = correlation[:HEATMAP_MAX_UNITS, :HEATMAP_MAX_UNITS]
    if correlation.shape[0] > HEATMAP_MAX_UNITS:
        title += f" (first {HEATMAP_MAX_UNITS} of {correlation.shape[0]} units)"
    figure = new_figure(width=6.4, height=5.8)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(
        np.ma.masked_invalid(shown), cmap=DIVERGING, vmin=-1, vmax=1, interpolation="nearest"
    )
    rows, cols = shown.shape
    hatch = {"facecolor": "white", "edgecolor": "0.55", "hatch": "////", "linewidth": 0}
    if not np.isfinite(shown).all():  # masked cells are transparent: the hatching shows
        axes.add_patch(Rectangle((-0.5, -0.5), cols, rows, zorder=0, **hatch))
        image.set_zorder(1)
        axes.legend(
            handles=[Patch(label="no r (a constant unit)", **hatch)],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.1),
            frameon=False,
            fontsize=9,
        )
    axes.set_xlabel("unit (channel index)")
    axes.set_ylabel("unit (channel index)")
    axes.set_title(plot_text(title), fontsize=10)
    bar = figure.colorbar(image, ax=axes, ticks=[-1, -0.5, 0, 0.5, 1])
    bar.set_label("Pearson r between the two units' activations")
    figure.tight_layout()
    save_figure(figure, path)
