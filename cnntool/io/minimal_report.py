"""What `cnntool attack cw|deepfool` reports beyond the other attacks' records: the record
columns (no ε), the sentence on the perturbation norms, and their histogram (norms.png)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnntool.io.attack_report import IMAGE_TABLE, RECORD_COLUMNS
from cnntool.io.figures import FONT, new_figure, one_line, save_figure, text_room, title_block
from cnntool.io.records import Column
from cnntool.io.untrusted import plot_text

MINIMAL_COLUMNS = [c for c in RECORD_COLUMNS if c != "eps"]
MINIMAL_TABLE = [*IMAGE_TABLE, Column("l2", lambda r: f"{r['l2']:.4f}")]
BAR = "#1f77b4"  # matplotlib's C0
_MAX_BINS = 40


def norms_sentence(norms) -> str:
    """The successes' L2 and L∞ norms in one sentence (a tasks.attack.minimal.PerturbationNorms)."""
    stats = norms.summary()
    apart = f"{norms.failures} failed" + (
        f", {norms.already} needed no perturbation" if norms.already else ""
    )
    if stats is None:
        return f"no successful perturbation ({apart})"
    return (
        f"L2 of the {norms.successes} successful perturbations: median {stats['l2_median']:.4g}, "
        f"mean {stats['l2_mean']:.4g} ({stats['l2_min']:.4g}–{stats['l2_max']:.4g}); "
        f"L∞ median {stats['linf_median']:.4g} ({stats['linf_median'] * 255:.3g}/255); {apart}"
    )


def save_norm_histogram(
    path: str | Path,
    l2: Sequence[float],
    *,
    title: str,
    settings: str = "",
    failures: int,
    already: int = 0,
    scale: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """A histogram of the successful perturbations' L2 norms (pixel scale 0–1) with their median
    marked, under a one-line `title` and a one-line subtitle: how many there are and how many
    failed (not drawn: a failure has no minimal perturbation), then the attack's `settings`
    (under the axis title instead when they do not fit beside the counts). Returns what was
    drawn: (counts, bin edges)."""
    values = np.asarray(l2, dtype=np.float64)
    figure = new_figure(width=5.5, height=3.8, scale=scale)
    axes = figure.add_subplot(1, 1, 1)
    counts, edges = _bins(values)
    if len(values):
        axes.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=BAR, ec="white")
        median = float(np.median(values))
        axes.axvline(
            median, color="black", linestyle="--", linewidth=1, label=f"median {median:.3g}"
        )
        axes.legend(fontsize=FONT - 1, loc="best")
    else:
        axes.text(0.5, 0.5, "no successful perturbation", ha="center", va="center", fontsize=FONT)
    apart = f"{failures} failed" + (f", {already} needed no perturbation" if already else "")
    counts_line = f"{len(values):,} successful ({apart})"
    subtitle = f"{counts_line} · {settings}" if settings else counts_line
    xlabel = "L2 norm of the perturbation (pixel scale 0–1)"
    room = text_room(figure, scale)
    if one_line(subtitle, room, FONT - 1, figure) != subtitle:
        subtitle = counts_line  # the settings go under the axis title, on a line of their own
        xlabel += "\n" + one_line(f"settings: {settings}", room, FONT, figure)
    top = title_block(figure, title, subtitle, scale=scale)
    axes.set_xlabel(plot_text(xlabel), fontsize=FONT)
    axes.set_ylabel("images", fontsize=FONT)
    axes.set_xlim(left=0)
    from matplotlib.ticker import MaxNLocator

    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.tick_params(labelsize=FONT - 1)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout(rect=(0, 0, 1, 1 - top))
    save_figure(figure, path)
    return counts, edges


def _bins(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy's automatic bins from 0 (a norm is never negative), at most _MAX_BINS of them."""
    if not len(values):
        return np.zeros(0, dtype=int), np.zeros(1)
    top = float(values.max()) or 1.0
    edges = np.histogram_bin_edges(values, bins="auto", range=(0.0, top))
    if len(edges) - 1 > _MAX_BINS:
        edges = np.linspace(0.0, top, _MAX_BINS + 1)
    counts, edges = np.histogram(values, bins=edges)
    return counts, edges
