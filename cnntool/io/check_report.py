"""What `visualize check` writes: the ranking table's columns, the cascading-randomization figure
(Adebayo et al. 2018, Fig. 2: rows are methods, columns the original map then each stage) and
the deletion/insertion curves (Petsiuk et al. 2018, Fig. 3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cnntool.io.figures import new_figure, save_figure
from cnntool.io.palette import CLASS_COLOURS
from cnntool.io.records import Column
from cnntool.io.untrusted import plot_text


def _number(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table_rows(verdicts: Sequence) -> list[dict]:
    """One row per method (tasks.check.MethodVerdict), in rank order, for console.show_table."""
    return [
        {
            "rank": str(v.rank),
            "method": v.method,
            "deletion": _number(v.deletion_auc),
            "insertion": _number(v.insertion_auc),
            "road": _number(v.road_gap),
            "last": _number(v.last_correlation),
            "mean": _number(v.mean_correlation),
            "verdict": {None: "—", True: "pass", False: "FAIL"}[v.passed],
        }
        for v in verdicts
    ]


TABLE_COLUMNS = [
    Column("#", "rank", right=True),
    Column("method", "method"),
    Column("deletion AUC ↓", "deletion", right=True),
    Column("insertion AUC ↑", "insertion", right=True),
    Column("ROAD LeRF−MoRF ↑", "road", right=True),
    Column("rank corr. last ↓", "last", right=True),
    Column("rank corr. mean ↓", "mean", right=True),
    Column("sanity", "verdict"),
]


def save_cascade_figure(
    path: str | Path,
    pixels: np.ndarray,
    maps: Mapping[str, Sequence[np.ndarray]],
    stages: Sequence[str],
    *,
    title: str,
) -> None:
    """Rows: methods; columns: the image, the original |map|, then the map after each cascade
    stage (labelled by the lowest module randomized). Each map is |map| divided by its 99th
    percentile and clipped to 1 (a few peaks would leave a pixel map black), grey scale from
    black (0) to white (1), one colour bar for the figure."""
    columns = 2 + len(stages)
    rows = len(maps)
    figure = new_figure(width=1.55 * columns + 0.9, height=1.65 * rows + 0.9)
    figure.subplots_adjust(
        left=0.07,
        right=0.9,
        bottom=0.03,
        top=1 - 0.55 / (1.65 * rows + 0.9),
        wspace=0.06,
        hspace=0.32,
    )
    image = np.clip(np.transpose(np.asarray(pixels, dtype=np.float32), (1, 2, 0)), 0, 1)
    if image.shape[2] == 1:
        image = image[:, :, 0]
    shown = None
    for row, (method, series) in enumerate(maps.items()):
        for column in range(columns):
            axes = figure.add_subplot(rows, columns, row * columns + column + 1)
            axes.set_xticks([])
            axes.set_yticks([])
            if column == 0:
                axes.imshow(
                    image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest"
                )
                axes.set_ylabel(plot_text(method), fontsize=11)
                label = "input"
            else:
                shown = axes.imshow(
                    _display(series[column - 1]),
                    cmap="gray",
                    vmin=0,
                    vmax=1,
                    interpolation="nearest",
                )
                label = "original" if column == 1 else f"→ {stages[column - 2]}"
            if row == 0:
                axes.set_title(plot_text(label), fontsize=8)
    if shown is not None:
        bar_axes = figure.add_axes([0.92, 0.15, 0.015, 0.7])
        bar = figure.colorbar(shown, cax=bar_axes)
        bar.set_label("|map| / its 99th percentile (clipped)", fontsize=9)
    figure.suptitle(plot_text(title), fontsize=11)
    save_figure(figure, path)


def _display(m: np.ndarray) -> np.ndarray:
    m = np.abs(np.asarray(m, dtype=np.float64))
    top = np.percentile(m, 99)
    top = top if top > 0 else m.max()
    return np.clip(m / top, 0, 1) if top > 0 else m


def save_curves_plot(path: str | Path, verdicts: Sequence, *, title: str) -> None:
    """Deletion and insertion curves side by side, one line per method (mean over the images):
    the share of pixels changed (%) against the target class's probability (%)."""
    figure = new_figure(width=10.0, height=4.2)
    for column, (kind, better) in enumerate(
        (("deletion", "lower AUC is better"), ("insertion", "higher AUC is better")), start=1
    ):
        axes = figure.add_subplot(1, 2, column)
        for i, v in enumerate(verdicts):
            curve = v.deletion_curve if kind == "deletion" else v.insertion_curve
            auc = v.deletion_auc if kind == "deletion" else v.insertion_auc
            if not curve:
                continue
            axes.plot(
                100 * np.asarray(v.fractions),
                100 * np.asarray(curve),
                color=CLASS_COLOURS[i % len(CLASS_COLOURS)],
                marker=".",
                label=plot_text(f"{v.method} (AUC {auc:.3f})"),
            )
        axes.set_xlabel("pixels " + ("removed" if kind == "deletion" else "inserted") + " (%)")
        axes.set_ylabel("target-class probability (%)")
        axes.set_xlim(0, 100)
        axes.set_ylim(-2, 102)
        axes.grid(alpha=0.3)
        axes.set_title(f"{kind} ({better})", fontsize=10)
        axes.legend(fontsize=8)
    figure.suptitle(plot_text(title), fontsize=11)
    figure.tight_layout()
    save_figure(figure, path)
