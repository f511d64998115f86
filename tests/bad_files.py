"""Files that break naive image loaders, made for real: a PNG whose header claims 100000×100000
pixels (Pillow's decompression-bomb error), a truncated JPEG, a FIFO and a dangling link."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A real 68-byte PNG whose IHDR claims width×height RGB pixels (with almost no data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
    return path


def write_truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "JPEG"
    )
    path.write_bytes(buffer.getvalue()[:300])
    return path


def write_good(folder: Path, count: int = 3) -> list[str]:
    paths = []
    for i in range(count):
        path = folder / f"good{i}.png"
        Image.new("RGB", (40 + i, 30), (60 * i, 20, 200)).save(path)
        paths.append(str(path))
    return paths


def bad_folder(folder: Path, good: int = 3) -> Path:
    """`good` small readable images and the four kinds of file a scan must skip and count."""
    folder.mkdir(parents=True, exist_ok=True)
    write_good(folder, good)
    write_bomb(folder / "bomb.png")
    write_truncated_jpeg(folder / "truncated.jpg")
    os.mkfifo(folder / "pipe.png")
    (folder / "dangling.jpg").symlink_to(folder / "missing.jpg")
    return folder
