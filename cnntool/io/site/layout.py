"""Where each file of a microscope site lives, relative to the site root.

The scan writes images under these names and the renderer links pages with them, so both
agree without passing paths around. Layer names are module paths (`_blocks.3`,
`layer4.1.conv2`); `layer_slug` turns one into a safe file name.
"""

from __future__ import annotations

import hashlib
import re

INDEX = "index.html"
EMBEDDING = "embedding.html"
ATTACK = "attack.html"
ASSETS = "assets"
SOURCES = "sources"
ATLASES = "atlases"


def layer_slug(name: str) -> str:
    """A file-name-safe form of a layer name, one per name: letters, digits, '.', '_' and '-'
    are kept, any other character becomes '-', and a leading '.' or an empty name are made
    visible. Such a change loses the name (`conv_α` and `conv_β` both become `conv_-`), so
    then a short hash of the real name is added (`conv_--1a2b3c4d`): two layers never share
    a page."""
    slug = re.sub(r"[^A-Za-z0-9._-]", "-", name)
    if not slug or slug.startswith("."):
        slug = "layer" + slug
    if slug != name:
        slug += "-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return slug


def layer_page(layer: str) -> str:
    return f"layers/{layer_slug(layer)}.html"


def layer_folder(layer: str) -> str:
    return f"layers/{layer_slug(layer)}"


def unit_page(layer: str, unit: int) -> str:
    return f"{layer_folder(layer)}/unit_{unit:04d}.html"


def patch_image(layer: str, unit: int, rank: int) -> str:
    return f"{layer_folder(layer)}/patches/u{unit:04d}_{rank:02d}.jpg"


def projection_image(layer: str, unit: int, rank: int) -> str:
    return f"{layer_folder(layer)}/projections/u{unit:04d}_{rank:02d}.jpg"


def visualization_image(layer: str, unit: int) -> str:
    return f"{layer_folder(layer)}/fv/u{unit:04d}.jpg"


def filters_image(layer: str) -> str:
    return f"{layer_folder(layer)}/filters.png"


def source_image(index: int) -> str:
    """The downscaled copy of DATA's image `index` (shared by every hit in that image)."""
    return f"{SOURCES}/{index:07d}.jpg"


def json_beside(page: str) -> str:
    """The JSON record written beside a page: `layers/a.html` -> `layers/a.json`."""
    return page[: -len(".html")] + ".json"


def depth(page: str) -> int:
    """How many folders down from the root a page is (its links start with that many '../')."""
    return page.count("/")
