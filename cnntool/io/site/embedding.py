"""embedding.html: the map of a layer's features, drawn by assets/map.js on a canvas.

The points go into the page as one inlined JSON block of columns (x, y, atlas, cell, …): from
file:// a page may not fetch() a file beside it, and columns are about half the size of
per-point objects (100k points: a few MB). Coordinates are scaled into the unit square here
(aspect kept, y pointing up on screen), and colours are chosen here (cnntool.io.palette, the
colours of embed's scatter PNG too), so the script only draws and has no palette of its own.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from cnntool.io.palette import CLASS_COLOURS, RIGHT, UNKNOWN, WRONG, class_colour
from cnntool.io.site import layout
from cnntool.io.site.markup import esc, json_script, link
from cnntool.io.site.model import Embedding, Site
from cnntool.io.site.pages import shell

LEGEND_LIMIT = 24  # more classes than this: the legend names the largest and counts the rest


def map_data(embedding: Embedding, seed: int = 0) -> dict:
    """The columns assets/map.js reads (see its header)."""
    points = embedding.points
    xy = np.array([(p.x, p.y) for p in points], dtype=np.float64).reshape(-1, 2)
    low, high = (xy.min(axis=0), xy.max(axis=0)) if len(xy) else (np.zeros(2), np.ones(2))
    span = float(max(high - low)) or 1.0
    unit = (xy - low) / span + (1.0 - (high - low) / span) / 2.0  # centred in [0, 1]²
    unit[:, 1] = 1.0 - unit[:, 1]  # screen y grows downwards
    names = list(embedding.label_names)
    labels = [p.label for p in points]
    predictions = [p.prediction for p in points]
    modes = []
    if any(label is not None for label in labels):
        modes.append(_class_mode("label", "label", labels, names))
    if any(p.correct is not None for p in points):
        right = sum(p.correct is True for p in points)
        wrong = sum(p.correct is False for p in points)
        unknown = len(points) - right - wrong
        legend = [
            {"name": "right", "color": RIGHT, "count": right},
            {"name": "wrong", "color": WRONG, "count": wrong},
        ]
        if unknown:
            legend.append({"name": "no label", "color": UNKNOWN, "count": unknown})
        modes.append(
            {
                "key": "correct",
                "title": "right / wrong",
                "colors": [RIGHT, WRONG, UNKNOWN],
                "of": [2 if p.correct is None else 0 if p.correct else 1 for p in points],
                "legend": legend,
            }
        )
    if any(p is not None for p in predictions):
        modes.append(_class_mode("prediction", "prediction", predictions, names))
    if not modes:
        modes.append(
            {
                "key": "none",
                "title": "one colour",
                "colors": [CLASS_COLOURS[1]],
                "of": [0] * len(points),
                "legend": [],
            }
        )
    hrefs = [p.href for p in points]
    return {
        "count": len(points),
        "x": [round(float(v), 5) for v in unit[:, 0]],
        "y": [round(float(v), 5) for v in unit[:, 1]],
        "label": labels,
        "prediction": predictions,
        "atlas": [p.atlas for p in points],
        "cell": [p.cell for p in points],
        "path": [p.path for p in points],
        "href": [None if h is None else link(h) for h in hrefs] if any(hrefs) else None,
        "names": names,
        "atlases": [
            {"image": link(a.image), "thumb": a.thumb, "columns": a.columns}
            for a in embedding.atlases
        ],
        "modes": modes,
        # a seeded shuffle: drawn in data order, the last class would cover all the others
        "order": np.random.default_rng(seed).permutation(len(points)).tolist(),
    }


def _class_mode(key: str, title: str, classes: list, names: list[str]) -> dict:
    used = sorted({c for c in classes if c is not None})
    slot = {c: i for i, c in enumerate(used)}
    colors = [class_colour(c) for c in used] + [UNKNOWN]
    tally = Counter(classes)
    ranked = sorted(used, key=lambda c: -tally[c])
    legend = [
        {
            "name": names[c] if 0 <= c < len(names) else str(c),
            "color": class_colour(c),
            "count": tally[c],
        }
        for c in ranked[:LEGEND_LIMIT]
    ]
    if len(ranked) > LEGEND_LIMIT:
        rest = sum(tally[c] for c in ranked[LEGEND_LIMIT:])
        legend.append(
            {"name": f"{len(ranked) - LEGEND_LIMIT} more classes", "color": None, "count": rest}
        )
    if tally[None]:
        legend.append({"name": "unknown", "color": UNKNOWN, "count": tally[None]})
    return {
        "key": key,
        "title": title,
        "colors": colors,
        "of": [len(used) if c is None else slot[c] for c in classes],
        "legend": legend,
    }


def embedding_page(site: Site) -> str:
    embedding = site.embedding
    data = map_data(embedding)
    options = "".join(
        f'<option value="{i}">{esc(m["title"])}</option>' for i, m in enumerate(data["modes"])
    )
    map_label = f"{embedding.method} map of {len(embedding.points):,} images from {embedding.layer}"
    body = f"""<div class="map-head">
<h1>Map of {esc(embedding.layer)} <span class="type">{esc(embedding.method)}</span></h1>
<p class="meta">{len(embedding.points):,} images. Scroll or <kbd>+</kbd>/<kbd>−</kbd> to zoom, drag
or arrow keys to pan,
<kbd>0</kbd> to reset; hover a point to see the image, click to open it. Zoom in far enough and the
points become thumbnails.</p>
<div class="map-controls">
<label>Colour by <select id="colour-by">{options}</select></label>
<button type="button" id="zoom-in" aria-label="Zoom in">+</button>
<button type="button" id="zoom-out" aria-label="Zoom out">−</button>
<button type="button" id="zoom-reset">Reset view</button>
</div>
</div>
<div class="map-area">
<div class="map-wrap">
<canvas id="map" tabindex="0" role="img"
aria-label="{esc(map_label)}"></canvas>
<div id="tip" class="tip" hidden><canvas id="tip-thumb" width="128" height="128"></canvas><div
class="tip-text"></div></div>
</div>
<ul id="legend" class="legend" aria-label="Legend"></ul>
</div>
{json_script("map-data", data)}"""
    return shell(site, layout.EMBEDDING, "Map", body, kind="embedding", scripts=("map.js",))
