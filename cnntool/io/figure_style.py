"""One look for the grids and panels PIL draws (filters, feature maps, deconv projections):
DejaVu Sans (the TrueType font matplotlib ships, so no download), text at least 11 px high at
1× and twice everything at `scale` 2, titles, gaps and 1-px frames between tiles, a colour bar
with its value range beside every heat map, and whole-number nearest-neighbour enlargement for
pixel-level images (a 3×3 kernel stays nine sharp squares; nothing is smoothed). Every PNG
that PIL draws text on goes through here (filters, activations, deconv, top patches, maximize's
grids, the microscope's filter sheets); the matplotlib charts use the same font.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
FRAME = (160, 160, 160)  # 1-px frame round each tile: visible on white, on black and on grey tiles
DIVERGING = "RdBu_r"  # signed values: blue < 0 < red, white at 0 (filters shown per channel)
SEQUENTIAL = "viridis"  # non-negative values (feature maps)

_LABEL_PX, _TITLE_PX, _SMALL_PX = 15, 17, 13  # font sizes at 1×: the ink of digits is 11 px at 15


@functools.lru_cache(maxsize=16)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at `size` px: the copy matplotlib (a dependency) ships in its data folder,
    read by path, so no font cache is built and every machine draws the same glyphs."""
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


@dataclass(frozen=True)
class FigureStyle:
    """Sizes of one figure; `scale` 2 doubles every length (print, HiDPI slides)."""

    scale: int = 1

    def px(self, length: float) -> int:
        return int(round(length * self.scale))

    @property
    def gap(self) -> int:
        return self.px(6)

    @property
    def label_font(self):
        return font(self.px(_LABEL_PX))

    @property
    def small_font(self):
        return font(self.px(_SMALL_PX))

    @property
    def small_bold_font(self):
        return font(self.px(_SMALL_PX), bold=True)

    @property
    def title_font(self):
        return font(self.px(_TITLE_PX), bold=True)

    @property
    def label_height(self) -> int:
        """One line of label text (a grid's label row holds one per line)."""
        return self.px(_LABEL_PX + 5)

    @property
    def title_height(self) -> int:
        return self.px(_TITLE_PX + 9)

    @property
    def frame(self) -> tuple[int, int, int]:
        return FRAME


def style_for(scale: int = 1) -> FigureStyle:
    if scale not in (1, 2):
        raise ValueError(f"scale must be 1 or 2, not {scale}")
    return FigureStyle(scale=scale)


def text_width(text: str, font_) -> int:
    return int(math.ceil(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font_)))


def fitted(text: str, width: int, font_) -> str:
    """`text`, cut with '…' so that it fits in `width` px (at least one character)."""
    if text_width(text, font_) <= width:
        return text
    while len(text) > 1 and text_width(text + "…", font_) > width:
        text = text[:-1]
    return text + "…"


def wrapped(text: str, width: int, font_) -> list[str]:
    """`text` broken into lines at spaces so that each fits in `width` px; a single word
    that is still too wide is cut with '…' (`fitted`)."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_width(lines[-1] + " " + word, font_) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return [fitted(line, width, font_) for line in lines] or [""]


def enlarged(image: Image.Image, longest: int) -> Image.Image:
    """`image` brought to about `longest` px on its longer side: up by a whole number with
    nearest neighbour (every source pixel an exact k×k block), down by area averaging."""
    size = max(image.size)
    if size <= longest:
        factor = max(1, longest // size)
        if factor == 1:
            return image
        return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    ratio = longest / size
    return image.resize(
        (max(1, round(image.width * ratio)), max(1, round(image.height * ratio))),
        Image.Resampling.BOX,
    )


def block_factor(size: int, target: int) -> int:
    """The whole-number enlargement that brings `size` px closest to `target` (at least 1)."""
    return max(1, round(target / max(1, size)))


def number(value: float) -> str:
    """A tick label: 3 significant digits, a true minus sign."""
    text = f"{value:.3g}"
    return text.replace("-", "−")


def colorize(array: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """[0, 1] values (H, W) -> RGB (H, W, 3) in [0, 1] through a colormap; 'gray' or no
    matplotlib gives gray."""
    if cmap != "gray":
        try:
            from matplotlib import colormaps
        except ImportError:
            cmap = "gray"
        else:
            if cmap not in colormaps:
                from cnntool.errors import unknown_name

                raise unknown_name("colormap", cmap, list(colormaps))
            return colormaps[cmap](np.clip(array, 0, 1))[..., :3].astype(np.float32)
    return np.repeat(np.clip(array, 0, 1)[..., None], 3, axis=2).astype(np.float32)


def colorbar(
    cmap: str,
    low: float,
    high: float,
    *,
    height: int,
    style: FigureStyle,
    label: str = "",
    ticks: list[tuple[float, str]] | None = None,
    extend: str = "neither",
) -> Image.Image:
    """A vertical colour bar `height` px tall: the colour map from `low` (bottom) to `high`
    (top) in a dark frame, tick labels (default: low, high and 0 when it lies between) to its
    right, and `label` written upwards beside them. `extend` "max", "min" or "both" puts a
    triangle of the end colour past that end (matplotlib's extend arrows): values beyond it
    were clipped to that colour."""
    bar_w, tick_font = style.px(14), style.small_font
    tip = style.px(10)
    top_tip = tip if extend in ("max", "both") else 0
    bottom_tip = tip if extend in ("min", "both") else 0
    ramp_h = max(4, height - top_tip - bottom_tip)
    ramp = np.linspace(1.0, 0.0, ramp_h - 2)[:, None].repeat(bar_w - 2, axis=1)
    strip = Image.fromarray(np.rint(colorize(ramp, cmap) * 255).astype(np.uint8))
    if ticks is None:
        ticks = [(high, number(high)), (low, number(low))]
        if low < 0 < high:
            ticks.append((0.0, "0"))
    text_w = max((text_width(t, tick_font) for _, t in ticks), default=0)
    label_img = _vertical_text(label, style) if label else None
    width = bar_w + style.px(4) + text_w + (style.px(4) + label_img.width if label_img else 0)
    ascent = style.px(_SMALL_PX) // 2 + 1  # tick labels at the ends stick out this much
    tall = max(height + 2 * ascent, label_img.height if label_img else 0)
    canvas = Image.new("RGB", (width + 1, tall), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    top = ascent + top_tip  # the ramp's frame
    canvas.paste(strip, (1, top + 1))
    edge = (60, 60, 60)
    draw.rectangle((0, top, bar_w - 1, top + ramp_h - 1), outline=edge)
    ends = np.rint(colorize(np.array([[1.0, 0.0]]), cmap)[0] * 255).astype(int)
    if top_tip:
        draw.polygon(
            [(0, top), (bar_w - 1, top), ((bar_w - 1) / 2, ascent)],
            fill=tuple(ends[0]),
            outline=edge,
        )
    if bottom_tip:
        bottom = top + ramp_h - 1
        draw.polygon(
            [(0, bottom), (bar_w - 1, bottom), ((bar_w - 1) / 2, bottom + bottom_tip)],
            fill=tuple(ends[1]),
            outline=edge,
        )
    span = (high - low) or 1.0
    for value, text in ticks:
        y = top + 1 + round((high - value) / span * (ramp_h - 3))
        draw.line((bar_w, y, bar_w + style.px(3) - 1, y), fill=INK)
        draw.text((bar_w + style.px(4), y), text, fill=INK, font=tick_font, anchor="lm")
    if label_img is not None:
        x = bar_w + style.px(8) + text_w
        canvas.paste(label_img, (x, ascent + max(0, (height - label_img.height) // 2)))
    return canvas


def _vertical_text(text: str, style: FigureStyle) -> Image.Image:
    """`text` in the small font, turned to read upwards (a colour bar's label)."""
    f = style.small_font
    line = Image.new("RGB", (text_width(text, f) + 2, style.px(_SMALL_PX + 4)), BACKGROUND)
    ImageDraw.Draw(line).text((1, 0), text, fill=INK, font=f)
    return line.rotate(90, expand=True)


def titled(
    image: Image.Image, title: str, style: FigureStyle, *, margin: int | None = None
) -> Image.Image:
    """`image` under a bold `title` (the canvas widens rather than clip the title)."""
    margin = style.gap if margin is None else margin
    f = style.title_font
    width = max(image.width, text_width(title, f) + 2 * margin)
    canvas = Image.new("RGB", (width, image.height + style.title_height), BACKGROUND)
    ImageDraw.Draw(canvas).text((margin, style.px(3)), title, fill=INK, font=f)
    canvas.paste(image.convert("RGB"), (0, style.title_height))
    return canvas


def beside(
    images, style: FigureStyle, *, gap: int | None = None, align: str = "top"
) -> Image.Image:
    """Images in one row on white (`align` "top" or "center")."""
    gap = style.gap * 2 if gap is None else gap
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    height = max(im.height for im in images)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    x = 0
    for image in images:
        y = 0 if align == "top" else (height - image.height) // 2
        canvas.paste(image.convert("RGB"), (x, y))
        x += image.width + gap
    return canvas


def padded(image: Image.Image, style: FigureStyle) -> Image.Image:
    """A white margin of one gap round the figure."""
    m = style.gap
    canvas = Image.new("RGB", (image.width + 2 * m, image.height + 2 * m), BACKGROUND)
    canvas.paste(image.convert("RGB"), (m, m))
    return canvas
