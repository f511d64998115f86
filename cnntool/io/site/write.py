"""Write a microscope site: pages, the JSON records beside them, and the assets.

The scan writes the images first (names from `layout`), then calls `write_site`, or the
per-page writers as the data comes (a layer page at a time keeps memory flat). Every file is
written atomically; the folder may already hold an earlier site (files are replaced).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from cnntool.io.site import layout
from cnntool.io.site.embedding import embedding_page
from cnntool.io.site.model import LayerPage, Site
from cnntool.io.site.pages import attack_page, index_page, layer_page, unit_page
from cnntool.io.writers import atomic_path, open_output

ASSET_FILES = ("site.css", "site.js", "map.js")


def write_site(folder: str | Path, site: Site, layers: Iterable[LayerPage]) -> list[str]:
    """Every page of the site; returns the pages written (relative to `folder`), index first."""
    folder = Path(folder)
    write_assets(folder)
    pages = [write_index(folder, site)]
    for page in layers:
        pages += write_layer(folder, site, page)
    if site.embedding is not None:
        pages.append(write_embedding(folder, site))
    if site.attack is not None:
        pages.append(write_attack(folder, site))
    return pages


def write_assets(folder: str | Path) -> None:
    """Copy the stylesheet and scripts (package data) into `folder`/assets."""
    target = Path(folder) / layout.ASSETS
    target.mkdir(parents=True, exist_ok=True)
    source = resources.files("cnntool.io.site") / "assets"
    for name in ASSET_FILES:
        with resources.as_file(source / name) as path, atomic_path(target / name) as temp:
            shutil.copyfile(path, temp)


def write_index(folder: str | Path, site: Site) -> str:
    """index.html and index.json (the whole Site record)."""
    _write(folder, layout.INDEX, index_page(site), site.to_json())
    return layout.INDEX


def write_layer(folder: str | Path, site: Site, page: LayerPage) -> list[str]:
    """The layer's page and one page per unit, each with its JSON (LayerPage, Unit)."""
    target = layout.layer_page(page.name)
    _write(folder, target, layer_page(site, page), page.to_json())
    written = [target]
    for position, unit in enumerate(page.units):
        target = layout.unit_page(page.name, unit.index)
        _write(folder, target, unit_page(site, page, position), unit.to_json())
        written.append(target)
    return written


def write_embedding(folder: str | Path, site: Site) -> str:
    _write(folder, layout.EMBEDDING, embedding_page(site), site.embedding.to_json())
    return layout.EMBEDDING


def write_attack(folder: str | Path, site: Site) -> str:
    _write(folder, layout.ATTACK, attack_page(site), site.attack.to_json())
    return layout.ATTACK


def _write(folder: str | Path, page: str, text: str, record: str) -> None:
    for name, content in ((page, text), (layout.json_beside(page), record)):
        with open_output(Path(folder) / name) as handle:
            handle.write(content)
