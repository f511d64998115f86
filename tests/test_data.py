"""DATA specs, image conversion, and scans that survive bad files."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cnntool.core.data import BatchStream, open_data
from cnntool.core.images import load_image
from cnntool.core.preprocessing import Preprocessing
from cnntool.errors import CnnToolError, DataError, UnknownNameError

RGB_224 = Preprocessing(crop=(224, 224), resize=256)
GRAY_28 = Preprocessing(crop=(28, 28), resize=28, mean=(0.0,), std=(1.0,), channels=1)


def _write_modes(folder):
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 65535, 32 * 48, dtype=np.uint16).reshape(32, 48)
    Image.fromarray(ramp).save(folder / "gray16.png")
    Image.new("P", (40, 30), 3).save(folder / "palette.png")
    Image.new("RGBA", (30, 40), (255, 0, 0, 0)).save(folder / "transparent.png")
    Image.new("L", (20, 20), 200).save(folder / "gray8.jpg")
    Image.new("CMYK", (20, 20), (0, 255, 0, 0)).save(folder / "cmyk.jpg")


def test_image_modes_are_converted(tmp_path):
    _write_modes(tmp_path)
    gray16 = load_image(tmp_path / "gray16.png")
    assert gray16.mode == "L"
    values = np.asarray(gray16)
    assert values.min() == 0 and values.max() == 255  # rescaled from 16 bits, not clipped
    assert load_image(tmp_path / "palette.png").mode == "RGB"
    transparent = load_image(tmp_path / "transparent.png")
    assert transparent.mode == "RGB" and np.asarray(transparent).max() == 0  # alpha 0 over black
    assert load_image(tmp_path / "cmyk.jpg").mode == "RGB"
    for path in tmp_path.iterdir():
        tensor = RGB_224(load_image(path))
        assert tensor.shape == (3, 224, 224) and torch.isfinite(tensor).all()


def test_preprocessing_equals_torchvision_on_non_square_images():
    from torchvision.models import ResNet50_Weights

    rng = np.random.default_rng(0)
    reference = ResNet50_Weights.IMAGENET1K_V2.transforms()  # resize 232, crop 224, bilinear
    ours = Preprocessing(crop=(224, 224), resize=232)
    for width, height in [(500, 375), (333, 500), (301, 299)]:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        assert torch.allclose(ours(image), reference(image), atol=1e-6)


def test_folder_labels_and_bad_files_are_skipped_and_counted(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.new("RGB", (64, 48), (i * 40, 0, 0)).save(tmp_path / label / f"{i}.png")
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = io.BytesIO()
    Image.new("RGB", (64, 64)).save(good, format="PNG")
    (tmp_path / "cat" / "truncated.png").write_bytes(good.getvalue()[:40])
    (tmp_path / "notes.txt").write_text("not an image, not listed")

    dataset = open_data(str(tmp_path))
    assert len(dataset) == 8
    assert sorted(set(dataset.labels)) == ["cat", "dog"]
    stream = BatchStream(dataset, RGB_224, batch_size=3)
    seen = [i for batch in stream for i in batch.indices]
    assert len(seen) == 6
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in stream.skipped) == [
        "broken.jpg",
        "truncated.png",
    ]
    assert all("cannot read image" in reason for _, reason in stream.skipped)


def test_workers_give_the_same_batches(tmp_path):
    for i in range(5):
        Image.new("RGB", (30 + i, 30), (i * 50, 10, 10)).save(tmp_path / f"{i}.png")
    dataset = open_data(str(tmp_path))
    single = torch.cat([b.inputs for b in BatchStream(dataset, RGB_224, batch_size=2)])
    parallel = torch.cat([b.inputs for b in BatchStream(dataset, RGB_224, batch_size=2, workers=2)])
    assert torch.equal(single, parallel)


def test_list_file_and_stdin(tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (10, 10)).save(path)
        paths.append(str(path))
    listing = tmp_path / "list.txt"
    listing.write_text("# images\n" + "\n".join(paths) + "\n\n")
    assert open_data(str(listing)).paths == paths
    assert open_data("-", stdin=io.StringIO("\n".join(paths))).paths == paths


def test_sample_sets():
    imagenet = open_data("imagenet-samples")
    assert len(imagenet) == 20 and imagenet.labels[0] == 243
    assert imagenet.label_name(0) == "bull mastiff"
    mnist = open_data("mnist-5k")
    assert len(mnist) == 5000 and set(mnist.labels) == set(range(10))
    first = next(iter(BatchStream(mnist, GRAY_28, batch_size=4)))
    assert (
        first.inputs.shape == (4, 1, 28, 28)
        and 0.0 <= first.inputs.min() <= first.inputs.max() <= 1.0
    )
    faces = open_data("faces")
    assert (
        len(faces) == 200 and faces.label_name(0) == "face" and faces.label_name(199) == "non-face"
    )
    photos = open_data("photos")
    assert len(photos) >= 8
    for index in (len(photos), -1):  # -1 would silently be the last image
        with pytest.raises(CnnToolError, match=f"image {index} is past the end of photos"):
            photos.load(index)
        with pytest.raises(CnnToolError, match="numbered from 0"):
            mnist.load_pixels(5000 if index > 0 else index, GRAY_28)


def test_unknown_sample_set_and_missing_path():
    with pytest.raises(UnknownNameError, match="mnist-5k"):
        open_data("mnist5k")
    with pytest.raises(DataError):
        open_data("no/such/folder")
