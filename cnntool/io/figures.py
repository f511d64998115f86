"""Images and figures written to files: 8-bit pixels, the adversarial triptych, the ε-sweep plot.

matplotlib is imported only when a figure is drawn (it is slow to import), and only through its
object API with the Agg canvas: no pyplot, no global state, no display needed. Every text that
can hold a user string (a class name, a path, a model or layer name) goes through
io.untrusted.plot_text: drawn as typed, never as math text.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from cnntool.io.untrusted import plot_text
from cnntool.io.writers import atomic_path


def pixels_to_image(pixels: np.ndarray) -> Image.Image:
    """[0, 1] pixels (C, H, W) with C = 1 or 3 -> an 8-bit 'L' or 'RGB' image (rounded)."""
    return Image.fromarray(to_uint8(_channels_last(pixels)))


def save_triptych(path: str | Path, clean: np.ndarray, adversarial: np.ndarray, *,
                  clean_title: str, adversarial_title: str, perturbation_title: str) -> None:
    """Original | perturbation, amplified to fill the grey range | adversarial (Goodfellow et
    al. 2015, Fig. 1). `clean` and `adversarial` are [0, 1] pixels (C, H, W)."""
    clean, adversarial = _channels_last(clean), _channels_last(adversarial)
    delta = adversarial - clean
    largest = float(np.abs(delta).max())
    # mid-grey is "no change"; the largest change reaches black or white
    shown_delta = 0.5 + delta / (2 * largest) if largest > 0 else np.full_like(delta, 0.5)
    figure = new_figure(width=9.0, height=3.3)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.9, wspace=0.05)
    panels = ((clean, clean_title), (shown_delta, perturbation_title), (adversarial, adversarial_title))
    for column, (pixels, title) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 3, column)
        gray = pixels.ndim == 2
        axes.imshow(np.clip(pixels, 0, 1), cmap="gray" if gray else None, vmin=0, vmax=1,
                    interpolation="nearest")
        axes.set_title(plot_text(title), fontsize=9)
        axes.axis("off")
    save_figure(figure, path)


def save_accuracy_plot(path: str | Path, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                       *, title: str, xlabel: str = "ε", ylabel: str = "accuracy") -> None:
    """One line per curve name: ε on x (with k/255 tick labels where ε is a multiple of
    1/255), `ylabel` from 0 to 1 on y."""
    figure = new_figure(width=5.5, height=3.8)
    axes = figure.add_subplot(1, 1, 1)
    ticks: set[float] = set()
    for name, (eps_values, values) in curves.items():
        axes.plot(eps_values, values, marker="o", label=plot_text(name))
        ticks.update(eps_values)
    axes.set_xticks(sorted(ticks), [eps_label(e) for e in sorted(ticks)], fontsize=8)
    axes.set_xlabel(plot_text(xlabel))
    axes.set_ylabel(plot_text(ylabel))
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title(plot_text(title), fontsize=10)
    if len(curves) > 1:
        axes.legend()
    figure.tight_layout()
    save_figure(figure, path)


def eps_label(eps: float) -> str:
    """0.3 -> '0.3', 0.00784… -> '2/255': ε as people write it (a short decimal when there is
    one, else a multiple of 1/255 when it is one)."""
    steps = eps * 255
    if float(f"{eps:.4g}") != eps and abs(steps - round(steps)) < 1e-6:
        return f"{round(steps)}/255"
    return f"{eps:g}"


def new_figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot: no global state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: str | Path) -> None:
    """Write `figure` as a PNG, atomically."""
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png")


def _channels_last(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, C), and (1, H, W) -> (H, W) for grayscale."""
    pixels = np.asarray(pixels, dtype=np.float32)
    return pixels[0] if pixels.shape[0] == 1 else np.transpose(pixels, (1, 2, 0))


def to_uint8(pixels) -> np.ndarray:
    """[0, 1] floats -> 0..255 (rounded, clipped). NaN becomes 0 (black): a diverged model's
    NaN pixels would otherwise be cast to arbitrary bytes (with numpy's "invalid value
    encountered in cast" warning on stderr)."""
    pixels = np.nan_to_num(np.asarray(pixels, dtype=np.float32), nan=0.0)
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
