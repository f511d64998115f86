"""Images and figures written to files: 8-bit pixels, the adversarial triptych, the ε-sweep plot.

matplotlib is imported only when a figure is drawn (it is slow to import), and only through its
object API with the Agg canvas: no pyplot, no global state, no display needed. Every text that
can hold a user string (a class name, a path, a model or layer name) goes through
io.untrusted.plot_text: drawn as typed, never as math text.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnntool.io.untrusted import plot_text
from cnntool.io.writers import atomic_path


def pixels_to_image(pixels: np.ndarray) -> Image.Image:
    """[0, 1] pixels (C, H, W) with C = 1 or 3 -> an 8-bit 'L' or 'RGB' image (rounded)."""
    return Image.fromarray(to_uint8(_channels_last(pixels)))


# pixel-level images smaller than this are enlarged by an integer factor to about this size
PANEL_SIZE = 224
FONT = 10  # points: 13.9 px at 1× (100 dpi), DESIGN's "≥ 11 px"
_MARGIN, _GAP, _LINE = 14, 44, 1.3  # px at 1×; the gap holds the "+" and "=" between panels


@dataclass(frozen=True)
class TriptychLayout:
    """Where save_triptych put things, in the PNG's pixels: each panel's (left, top, right,
    bottom), each image pixel drawn as a `factor`×`factor` block; the perturbation shown
    ×`amplification` around mid-grey (±`bound` → black and white)."""

    panels: tuple[tuple[int, int, int, int], ...]
    factor: int
    amplification: float
    bound: float


def enlargement(height: int, width: int, target: int = PANEL_SIZE) -> int:
    """The integer factor that brings a small image (a 28-px digit, a 32-px CIFAR picture)
    near `target` px: 8 for 28 px, 7 for 32, 1 for 224 and anything larger (never shrunk)."""
    return max(1, target // max(height, width))


def enlarge(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of (H, W[, C]) by an integer factor: each pixel becomes a
    factor×factor block of exactly its value (no smoothing, no uneven blocks)."""
    return pixels.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else pixels


def perturbation_pixels(delta: np.ndarray, bound: float) -> tuple[np.ndarray, float]:
    """A perturbation for the eye: 0.5 + δ·A with A = 1 / (2·bound), so −bound is black, no change
    mid-grey and +bound white (clipped beyond). Returns the pixels and the amplification A."""
    if not bound > 0:
        return np.full_like(delta, 0.5), 0.0
    amplification = 1.0 / (2.0 * bound)
    return np.clip(0.5 + delta * amplification, 0, 1), amplification


def save_triptych(
    path: str | Path,
    clean: np.ndarray,
    adversarial: np.ndarray,
    *,
    eps: float | None,
    clean_title: str,
    adversarial_title: str,
    norm: str = "linf",
    scale: int = 1,
) -> TriptychLayout:
    """Original | perturbation | adversarial, laid out as Goodfellow et al. 2015, Fig. 1 (x + ε·
    sign(∇) = x̃): each panel titled, the perturbation amplified so that ±ε (L∞; for L2 its
    largest change) spans black to white, with the factor in its title (`eps` None: an attack
    without a budget, titled with the perturbation's L2 norm instead). `clean` and
    `adversarial` are [0, 1] pixels (C, H, W). Images are drawn pixel for pixel (figimage, no
    resampling), small ones enlarged by an integer factor, nearest neighbour. `scale` 2 doubles
    every pixel and the text (print)."""
    clean, adversarial = _channels_last(clean), _channels_last(adversarial)
    delta = adversarial - clean
    largest = float(np.abs(delta).max()) if delta.size else 0.0
    budget = eps is not None and norm == "linf" and eps > 0 and largest <= eps * (1 + 1e-5)
    bound = eps if budget else largest
    shown, amplification = perturbation_pixels(delta, bound)
    height, width = clean.shape[:2]
    factor = enlargement(height, width)
    panel_w, panel_h = width * factor, height * factor
    if eps is None:
        eps_text = f"L2 = {float(np.sqrt(np.square(delta, dtype=np.float64).sum())):.3g}"
    else:
        eps_text = f"ε = {eps_label(eps)}" + ("" if norm == "linf" else f" ({norm})")
    bound_text = eps_label(bound) if eps is not None else f"{bound:.3g}"
    mapping = f"−{bound_text} black · 0 grey · +{bound_text} white" if bound > 0 else "no change"
    titles = [
        _wrap(clean_title, panel_w),
        [
            f"perturbation ×{amplification:.3g}, {eps_text}"
            if bound > 0
            else f"perturbation, {eps_text}",
            mapping,
        ],
        _wrap(adversarial_title, panel_w),
    ]
    line_px = FONT * _LINE * 100 / 72
    band = int(np.ceil(max(len(t) for t in titles) * line_px)) + 8
    fig_w, fig_h = 2 * _MARGIN + 3 * panel_w + 2 * _GAP, band + panel_h + _MARGIN + 2
    figure = new_figure(
        width=(fig_w * scale + 0.25) / (100 * scale),
        height=(fig_h * scale + 0.25) / (100 * scale),
        scale=scale,
    )
    figure.patch.set_facecolor("white")
    boxes = []
    for column, (pixels, title) in enumerate(zip((clean, shown, adversarial), titles, strict=True)):
        left = _MARGIN + column * (panel_w + _GAP)
        rgb = to_uint8(pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2))
        top = band
        # figimage puts the array's pixels on the canvas one to one, from the bottom-left corner
        figure.figimage(
            enlarge(rgb, factor * scale),
            xo=left * scale,
            yo=(fig_h - top - panel_h) * scale,
            origin="upper",
            resize=False,
        )
        boxes.append((left * scale, top * scale, (left + panel_w) * scale, (top + panel_h) * scale))
        figure.text(
            (left + panel_w / 2) / fig_w,
            1 - 4 / fig_h,
            "\n".join(plot_text(t) for t in title),
            ha="center",
            va="top",
            fontsize=FONT,
            linespacing=_LINE,
        )
        if column:
            figure.text(
                (left - _GAP / 2) / fig_w,
                1 - (top + panel_h / 2) / fig_h,
                "+" if column == 1 else "=",
                ha="center",
                va="center",
                fontsize=2 * FONT,
            )
    save_figure(figure, path)
    return TriptychLayout(tuple(boxes), factor * scale, amplification, bound)


def _wrap(text: str, width_px: int, lines: int = 3) -> list[str]:
    """A title's lines, each short enough for a panel `width_px` wide (long class names wrap)."""
    chars = max(12, int(width_px / (FONT * 100 / 72 * 0.6)))
    out = []
    for part in str(text).split("\n"):
        out.extend(textwrap.wrap(part, chars) or [""])
    return out[:lines]


def save_accuracy_plot(
    path: str | Path,
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    norm: str = "linf",
    scale: int = 1,
    clean: float | None = None,
) -> dict[str, tuple[list[float], list[float]]]:
    """Accuracy (%) against ε, one line per curve name, ε on a true numeric axis (x proportional
    to ε, never evenly spaced). `curves` hold ε in [0, 1] pixel units and accuracies as
    fractions. When every ε is a whole number of 8-bit steps that reads better as k/255 (2/255,
    8/255) the axis counts those steps ("ε (L∞, in 1/255 steps of the 0–1 pixel scale)"), else
    it is in pixel units ("ε (L∞, pixel scale 0–1)"). `clean`: the clean accuracy, drawn at ε = 0
    (and labelled) where a curve has no ε = 0. Returns what was drawn: name -> (x, y in %)."""
    figure = new_figure(width=5.5, height=3.8, scale=scale)
    axes = figure.add_subplot(1, 1, 1)
    every = sorted({e for xs, _ in curves.values() for e in xs} | {0.0})
    steps = all(e == 0 or "/255" in eps_label(e) for e in every)
    unit = 255.0 if steps else 1.0
    norm_name = {"linf": "L∞", "l2": "L2"}.get(norm, norm)
    xlabel = (
        f"ε ({norm_name}, in 1/255 steps of the 0–1 pixel scale)"
        if steps
        else f"ε ({norm_name}, pixel scale 0–1)"
    )
    drawn = {}
    for name, (eps_values, values) in curves.items():
        points = sorted(zip(eps_values, values, strict=True))
        if clean is not None and (not points or points[0][0] != 0):
            points.insert(0, (0.0, clean))
        xs = [e * unit for e, _ in points]
        ys = [100.0 * v if v is not None else float("nan") for _, v in points]
        axes.plot(xs, ys, marker="o", label=plot_text(name))
        drawn[name] = (xs, ys)
    first = next(iter(drawn.values()), None)
    if first and first[0] and first[0][0] == 0 and clean is not None:
        axes.annotate(
            f"clean {first[1][0]:.1f}%",
            (0, first[1][0]),
            xytext=(6, -22),
            textcoords="offset points",
            fontsize=FONT - 1,
            va="top",
        )
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=steps, min_n_ticks=3))
    axes.tick_params(labelsize=FONT - 1)
    axes.set_xlim(left=-0.02 * max(every[-1] * unit, 1e-9))
    axes.set_xlabel(xlabel, fontsize=FONT)
    axes.set_ylabel("accuracy (%)", fontsize=FONT)
    axes.set_ylim(-2, 102)
    axes.set_yticks(range(0, 101, 20))
    axes.grid(alpha=0.3)
    axes.set_title(plot_text(title), fontsize=FONT + 1)
    if len(curves) > 1:
        axes.legend(fontsize=FONT - 1)
    figure.tight_layout()
    save_figure(figure, path)
    return drawn


def points_px(points: float, scale: float = 1) -> float:
    """A matplotlib font size (or length) in points as pixels at new_figure's 100 dpi × `scale`."""
    return points * 100 * scale / 72


def one_line(text: str, width_px: float, points: float, figure) -> str:
    """`text` as it is when it fits in `width_px` at `points` on `figure` (measured by its own
    renderer, as it will be drawn), else cut in the middle with '…' so that it does: a long
    path keeps its start and its last folder."""
    from matplotlib.font_manager import FontProperties

    renderer, face = figure.canvas.get_renderer(), FontProperties(size=points)

    def fits(candidate: str) -> bool:
        return renderer.get_text_width_height_descent(candidate, face, ismath=False)[0] <= width_px

    if fits(text):
        return text
    head, tail = len(text) // 2, len(text) - len(text) // 2
    while head + tail > 1:
        if head >= tail:
            head -= 1
        else:
            tail -= 1
        shown = text[:head] + "…" + text[len(text) - tail :]
        if fits(shown):
            return shown
    return text[:1] + "…"


def title_block(figure, title: str, subtitle: str = "", *, scale: float = 1) -> float:
    """A one-line `title` (FONT + 1) and, under it, a one-line `subtitle` (FONT − 1) centred at
    the top of `figure`, each cut to the figure's width (`one_line`: they never wrap onto a
    third line). Returns the share of the figure's height they take: lay the axes out under it,
    `figure.tight_layout(rect=(0, 0, 1, 1 - share))`."""
    width = text_room(figure, scale)
    height = figure.get_figheight() * figure.dpi
    lines = [(title, FONT + 1)] + ([(subtitle, FONT - 1)] if subtitle else [])
    y = points_px(4, scale)  # px from the top
    for text, points in lines:
        figure.text(
            0.5,
            1 - y / height,
            plot_text(one_line(text, width, points, figure)),
            fontsize=points,
            ha="center",
            va="top",
        )
        y += points_px(points * 1.4, scale)
    return y / height


def text_room(figure, scale: float = 1) -> float:
    """How wide a line of text may be on `figure`, in px: its width less a margin each side."""
    return figure.get_figwidth() * figure.dpi - 2 * points_px(FONT, scale)


def eps_label(eps: float) -> str:
    """0.3 -> '0.3', 0.00784… -> '2/255': ε as people write it (a short decimal when there is
    one, else a multiple of 1/255 when it is one)."""
    steps = eps * 255
    if float(f"{eps:.4g}") != eps and abs(steps - round(steps)) < 1e-6:
        return f"{round(steps)}/255"
    return f"{eps:g}"


def new_figure(width: float, height: float, scale: float = 1):
    """A matplotlib Figure on the Agg canvas (no pyplot: no global state, no display), `width`
    × `height` inches at 100 dpi × `scale` (2: the same figure with twice the pixels, for print)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100 * scale)
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
