"""TensorBoard projector export: every file parsed back, the sprite checked by its pixels."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from cnntool.core.samples import mnist_5k
from cnntool.io.projector import PROJECTOR_POINT_LIMIT, sprite_layout, write_projector


def parse_pbtxt(text: str) -> dict:
    """A protobuf text message as nested dicts; every field is a list (fields may repeat)."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"]+', text)
    position = 0

    def message() -> dict:
        nonlocal position
        fields: dict = {}
        while position < len(tokens) and tokens[position] != "}":
            name = tokens[position]
            position += 1
            if tokens[position] == ":":
                position += 1
                raw = tokens[position]
                position += 1
                value = (
                    raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                    if raw.startswith('"')
                    else int(raw)
                )
            else:
                assert tokens[position] == "{"
                position += 1
                value = message()
                assert tokens[position] == "}"
                position += 1
            fields.setdefault(name, []).append(value)
        return fields

    return message()


def test_files_parse_back_and_each_thumbnail_lands_in_its_row_major_cell(tmp_path):
    digits, labels = mnist_5k()
    count = 37
    features = np.random.default_rng(0).normal(size=(count, 5)) * 1000
    rows = [(int(labels[i]), f"mnist-5k/{i:05d}") for i in range(count)]
    thumbnails = [Image.fromarray(d) for d in digits[:count]]
    export = write_projector(tmp_path, features, rows, ["label", "path"], thumbnails)
    assert (export.count, export.dims, export.thumb, export.warnings) == (count, 5, 28, ())

    tensors = np.loadtxt(tmp_path / "tensors.tsv", delimiter="\t")
    np.testing.assert_allclose(tensors, features, rtol=1e-7)
    lines = (tmp_path / "metadata.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "label\tpath" and len(lines) == count + 1
    assert lines[1:] == [f"{label}\t{path}" for label, path in rows]

    config = parse_pbtxt((tmp_path / "projector_config.pbtxt").read_text(encoding="utf-8"))
    embedding = config["embeddings"][0]
    assert embedding["tensor_path"] == ["tensors.tsv"] and embedding["metadata_path"] == [
        "metadata.tsv"
    ]
    assert embedding["tensor_shape"] == [count, 5]
    assert embedding["sprite"] == [{"image_path": ["sprite.png"], "single_image_dim": [28, 28]}]

    sprite = np.asarray(Image.open(tmp_path / "sprite.png").convert("L"))
    assert sprite.shape == (7 * 28, 7 * 28)  # ceil(sqrt(37)) = 7 cells a side, square
    for i in range(count):
        row, column = divmod(i, 7)
        np.testing.assert_array_equal(
            sprite[row * 28 : (row + 1) * 28, column * 28 : (column + 1) * 28], digits[i]
        )
    assert sprite[6 * 28 :, 2 * 28 :].max() == 0  # the unused cells: the digits' black background


def test_one_column_has_no_header_and_cells_stay_on_their_line(tmp_path):
    write_projector(tmp_path, np.eye(3), ["cat", "tab\there", None], ["label"])
    assert (tmp_path / "metadata.tsv").read_text(encoding="utf-8") == "cat\ntab here\n\n"
    config = parse_pbtxt((tmp_path / "projector_config.pbtxt").read_text(encoding="utf-8"))
    assert "sprite" not in config["embeddings"][0]
    assert not (tmp_path / "sprite.png").exists()


def test_sprite_cells_shrink_to_stay_within_8192_px():
    assert sprite_layout(37, 28) == (7, 28)
    assert sprite_layout(100_000, 64) == (317, 25)  # 317 × 25 = 7925 px
    assert sprite_layout(4, 8192) == (2, 4096)
    with pytest.raises(ValueError):
        sprite_layout(8193**2, 1)


def test_more_points_than_the_projector_loads_is_said(tmp_path):
    export = write_projector(tmp_path, np.zeros((PROJECTOR_POINT_LIMIT + 1, 1)), [], [])
    assert export.warnings == (
        "TensorBoard's projector loads only the first 100,000 of the 100,001 points written",
    )
    with open(tmp_path / "tensors.tsv") as lines:
        assert sum(1 for _ in lines) == PROJECTOR_POINT_LIMIT + 1


def test_embed_writes_the_projector_files_of_its_features(cnntool, tmp_path):
    """`cnntool embed … --projector DIR`: the features themselves (not the 2-D map), a label
    and a path per row, and the images in the sprite in row order."""
    from cnntool.core.samples import mnist_5k

    digits, labels = mnist_5k()
    folder = tmp_path / "digits"
    for i in range(0, 400, 20):
        (folder / str(labels[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits[i]).save(folder / str(labels[i]) / f"{i:04d}.png")
    result = cnntool(
        "embed",
        "lenet5-mnist",
        folder,
        "--layer",
        "relu3",
        "--method",
        "pca",
        "--projector",
        tmp_path / "proj",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    tensors = np.loadtxt(tmp_path / "proj" / "tensors.tsv", delimiter="\t")
    meta = (tmp_path / "proj" / "metadata.tsv").read_text().splitlines()
    assert tensors.shape == (20, 200) and meta[0] == "label\tpath" and len(meta) == 21
    paths = [line.split("\t")[1] for line in meta[1:]]
    assert paths == sorted(str(p) for p in folder.rglob("*.png"))
    sprite = np.asarray(Image.open(tmp_path / "proj" / "sprite.png").convert("L"))
    side = int(np.ceil(np.sqrt(20)))  # 5 × 5 cells of 28 px
    assert sprite.shape == (side * 28, side * 28)
    third = np.asarray(Image.open(paths[2]).convert("L"))
    assert np.array_equal(sprite[0:28, 2 * 28 : 3 * 28], third)
