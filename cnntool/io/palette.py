"""The class colours of every picture cnntool draws: `embed`'s scatter PNG and the microscope's
map use this one palette, so that a class has the same colour in both.

`CLASS_COLOURS` holds 24 colours that stay readable on white (the PNGs) and on the map's dark
background (#0f1116): OKLab lightness 0.53 to 0.91 (contrast at least 3.6:1 on the map; on
white, Okabe & Ito's yellow is the faintest at 1.3:1), and none grey (grey means "unknown
label"). The first 7 are Okabe & Ito's colour-blind-safe set (orange, sky blue,
bluish green, yellow, blue, vermillion, reddish purple); the other 17 were picked greedily from
an OKLab grid, each the candidate farthest from those already chosen. Measured in OKLab (1.0 is
black to white): any two of the 24 are at least 0.10 apart for normal vision, and the first 8 at
least 0.076 apart under simulated protanopia, deuteranopia and tritanopia (Machado et al. 2009,
full severity). No 20-colour set stays apart for colour-blind viewers; past the first 8, tell
classes apart by the legend and the hover text. Past 24 classes, hues spaced by the golden
angle follow: still distinct from their neighbours in index, but close to some other class.
"""

from __future__ import annotations

import colorsys

CLASS_COLOURS = (
    "#e69f00",
    "#56b4e9",
    "#009e73",
    "#f0e442",
    "#0072b2",
    "#d55e00",
    "#cc79a7",
    "#24ecb3",
    "#e5b6fa",
    "#827cee",
    "#83c144",
    "#958502",
    "#fcb99b",
    "#a455b2",
    "#ff8171",
    "#91d8e6",
    "#c74666",
    "#cf89f7",
    "#5fc0a5",
    "#bed593",
    "#ba8d6a",
    "#528da4",
    "#fd8ac2",
    "#a36a57",
)
UNKNOWN = "#8a919e"  # no label: a grey none of the class colours is near
# right / wrong predictions: Okabe & Ito's bluish green and vermillion, apart for colour-blind
# viewers too (a plain green and red are not)
RIGHT, WRONG = "#009e73", "#d55e00"


def class_colour(index: int) -> str:
    """The colour of class `index` (0-based) as '#rrggbb'."""
    if 0 <= index < len(CLASS_COLOURS):
        return CLASS_COLOURS[index]
    hue = (index * 0.381966) % 1.0
    r, g, b = colorsys.hls_to_rgb(hue, 0.62, 0.65)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def class_rgb(index: int) -> tuple[float, float, float]:
    """`class_colour` as matplotlib's (r, g, b) in [0, 1]."""
    return rgb(class_colour(index))


def rgb(colour: str) -> tuple[float, float, float]:
    value = int(colour.lstrip("#"), 16)
    return ((value >> 16) / 255.0, ((value >> 8) & 0xFF) / 255.0, (value & 0xFF) / 255.0)
