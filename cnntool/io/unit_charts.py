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
    """r between units as a diverging heat map from −1 to 1 (NaN, a constant unit, in gray)."""
    shown = correlation[:HEATMAP_MAX_UNITS, :HEATMAP_MAX_UNITS]
    if correlation.shape[0] > HEATMAP_MAX_UNITS:
        title += f" (first {HEATMAP_MAX_UNITS} of {correlation.shape[0]} units)"
    figure = new_figure(width=6.4, height=5.6)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(
        np.ma.masked_invalid(shown), cmap="coolwarm", vmin=-1, vmax=1, interpolation="nearest"
    )
    axes.set_facecolor("0.8")
    axes.set_xlabel("unit")
    axes.set_ylabel("unit")
    axes.set_title(plot_text(title), fontsize=9)
    figure.colorbar(image, ax=axes, label="r")
    figure.tight_layout()
    save_figure(figure, path)
