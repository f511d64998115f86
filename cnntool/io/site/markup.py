"""Small HTML pieces: escaping, links relative to a page, number formats, inline SVG charts.

Every string that reaches a page goes through `esc` (text and attribute values alike), every
path through `url` (percent-encoded, made relative to the page), and data for scripts through
`json_script` (no '<', '>' or '&' survives, so nothing can close the script element).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from urllib.parse import quote

from cnntool.io.site.model import Histogram

DASH = "\u2014"


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def link(path: str, prefix: str = "") -> str:
    """A link to `path`: a URL with a scheme is kept, a site path is percent-encoded and
    prefixed with '../'s (`prefix`) to be relative to the page."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path):
        return path
    return prefix + quote(path, safe="/")


def url(path: str, prefix: str = "") -> str:
    """`link`, escaped for an HTML attribute."""
    return esc(link(path, prefix))


def json_script(element_id: str, data) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def img(
    path: str,
    prefix: str,
    alt: str,
    *,
    cls: str = "",
    width: int | None = None,
    height: int | None = None,
    lazy: bool = True,
) -> str:
    attrs = [f'src="{url(path, prefix)}"', f'alt="{esc(alt)}"']
    if cls:
        attrs.append(f'class="{esc(cls)}"')
    if width:
        attrs.append(f'width="{int(width)}"')
    if height:
        attrs.append(f'height="{int(height)}"')
    if lazy:
        attrs.append('loading="lazy" decoding="async"')
    return f"<img {' '.join(attrs)}>"


# ---------------------------------------------------------------------------------------------
# numbers


def count(value: int | None) -> str:
    """61,100,840 -> '61.1 M'; below 10,000 written out in full."""
    if value is None:
        return DASH
    if abs(value) < 10_000:
        return f"{value:,}"
    for size, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        scaled = value / size
        if abs(scaled) < 999.5 or suffix == "T":
            return f"{scaled:.3g}\u2009{suffix}"
    raise AssertionError("unreachable")


def share(value: float | None) -> str:
    """A fraction as a percentage: 0.125 -> '12.5%', tiny but non-zero -> '<0.1%'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if value == 0:
        return "0%"
    if 0 < value < 0.001:
        return "<0.1%"
    percent = value * 100
    return f"{percent:.0f}%" if percent >= 99.95 or percent == round(percent) else f"{percent:.1f}%"


def number(value: float | None) -> str:
    """Three significant digits, without exponents for everyday magnitudes."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) < 0.001:
        return f"{value:.2e}"
    text = f"{value:.3g}"
    return text if "e" not in text else f"{value:.4f}"


def shape(dims: Sequence[int]) -> str:
    return "\u00d7".join(str(d) for d in dims) if dims else DASH


# ---------------------------------------------------------------------------------------------
# charts


def histogram_svg(histogram: Histogram, title: str, width: int = 360, height: int = 140) -> str:
    """Bars of the counts on a log scale (the spike at 0 of a rectified unit would flatten the
    rest on a linear one), with the range and 0 marked."""
    edges, counts = histogram.edges, histogram.counts
    low, high = edges[0], edges[-1]
    span = (high - low) or 1.0
    top = math.log1p(max(counts) if counts else 1) or 1.0
    plot_h = height - 22
    bars = []
    for i, c in enumerate(counts):
        x0 = (edges[i] - low) / span * width
        x1 = (edges[i + 1] - low) / span * width
        h = math.log1p(c) / top * plot_h
        if h > 0:
            bars.append(
                f'<rect x="{x0:.1f}" y="{plot_h - h:.1f}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" '
                f'height="{h:.1f}"><title>{esc(number(edges[i]))} to {esc(number(edges[i + 1]))}: '
                f"{c:,}</title></rect>"
            )
    zero = ""
    if low < 0 < high:
        zx = -low / span * width
        zero = (
            f'<line class="zero" x1="{zx:.1f}" x2="{zx:.1f}" y1="0" y2="{plot_h}"/>'
            f'<text x="{zx:.1f}" y="{height - 6}" text-anchor="middle">0</text>'
        )
    return (
        f'<svg class="chart histogram" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(title)}"><title>{esc(title)}</title>'
        f'<g class="bars">{"".join(bars)}</g>'
        f'<line class="axis" x1="0" x2="{width}" y1="{plot_h}" y2="{plot_h}"/>{zero}'
        f'<text x="0" y="{height - 6}">{esc(number(low))}</text>'
        f'<text x="{width}" y="{height - 6}" text-anchor="end">{esc(number(high))}</text></svg>'
    )


def curve_svg(
    xs: Sequence[float],
    ys: Sequence[float],
    labels: Iterable[str],
    title: str,
    width: int = 480,
    height: int = 262,
    xtitle: str = "ε (L∞, pixel scale 0–1)",
    ytitle: str = "accuracy (%)",
) -> str:
    """A line through (x, y) points, y in [0, 1] (accuracy, drawn in %), x on a true numeric
    axis from 0 to the largest x (a point's position is proportional to its x, never evenly
    spread); `labels` name the points' x ticks, a label too close to the one before is left out
    (the point stays, with its value in its tooltip). Axis titles `xtitle` and `ytitle`."""
    left, bottom, right, top = 58, 46, 30, 12  # room for the y title and the last tick label
    plot_w, plot_h = width - left - right, height - top - bottom
    span = max(max(xs, default=0.0), 1e-12)
    points = [
        (left + max(x, 0.0) / span * plot_w, top + (1 - y) * plot_h)
        for x, y in zip(xs, ys, strict=True)
    ]
    grid = "".join(
        f'<line class="grid" x1="{left}" x2="{width - right}" y1="{top + (1 - g) * plot_h:.1f}" '
        f'y2="{top + (1 - g) * plot_h:.1f}"/><text x="{left - 6}" '
        f'y="{top + (1 - g) * plot_h + 4:.1f}" '
        f'text-anchor="end">{g * 100:.0f}</text>'
        for g in (0, 0.25, 0.5, 0.75, 1)
    )
    ticks, last = [], -math.inf
    for (x, _), label in sorted(zip(points, labels, strict=True), key=lambda item: item[0][0]):
        if x - last >= 34:
            ticks.append(
                f'<text x="{x:.1f}" y="{height - 26}" text-anchor="middle">{esc(label)}</text>'
            )
            last = x
    axes = (
        f'<text class="axis-title" x="{left + plot_w / 2:.1f}" y="{height - 6}" '
        f'text-anchor="middle">{esc(xtitle)}</text>'
        f'<text class="axis-title" x="14" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})">{esc(ytitle)}</text>'
    )
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4"><title>{esc(share(v))}</title></circle>'
        for (x, y), v in zip(points, ys, strict=True)
    )
    return (
        f'<svg class="chart curve" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(title)}"><title>{esc(title)}</title>{grid}{"".join(ticks)}{axes}'
        f'<polyline points="{path}"/>{dots}</svg>'
    )
