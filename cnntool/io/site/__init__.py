"""The microscope site: static HTML pages that open from file:// with no server and no network.

- `model`: the records a site shows (frozen dataclasses; the JSON beside every page);
- `layout`: where each file lives, relative to the site root;
- `images`: JPEG patches, downscaled sources, sprite atlases;
- `write`: the pages, their JSON and the assets (CSS and JS shipped as package data).
"""

from cnntool.io.site.images import (
    atlas_capacity,
    atlas_slot,
    atlas_thumb_size,
    save_jpeg,
    save_patch,
    save_source,
    write_atlases,
)
from cnntool.io.site.model import (
    Atlas,
    Attack,
    Correlated,
    DataCard,
    Embedding,
    Finding,
    Histogram,
    LayerPage,
    LayerSummary,
    ModelCard,
    Patch,
    Point,
    Site,
    Triptych,
    Unit,
    UnitStats,
    Vote,
)
from cnntool.io.site.write import (
    write_assets,
    write_attack,
    write_embedding,
    write_index,
    write_layer,
    write_site,
)

__all__ = [
    "Atlas",
    "Attack",
    "Correlated",
    "DataCard",
    "Embedding",
    "Finding",
    "Histogram",
    "LayerPage",
    "LayerSummary",
    "ModelCard",
    "Patch",
    "Point",
    "Site",
    "Triptych",
    "Unit",
    "UnitStats",
    "Vote",
    "atlas_capacity",
    "atlas_slot",
    "atlas_thumb_size",
    "save_jpeg",
    "save_patch",
    "save_source",
    "write_atlases",
    "write_assets",
    "write_attack",
    "write_embedding",
    "write_index",
    "write_layer",
    "write_site",
]
