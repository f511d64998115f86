"""Preprocessing: the JSON schema, validation, no-resize geometry, channels 1/3/4, and where a
model's preprocessing comes from (every source of the precedence list, and the guess)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import tests.own_models  # noqa: F401  (imported: `tests.own_models:NAME` specs need no --trust-code)
from cnntool import save_checkpoint
from cnntool.core.data import BatchStream, open_data
from cnntool.core.loading.models import load_model
from cnntool.core.loading.preprocessing_sources import PreprocessingOptions
from cnntool.core.preprocessing import Preprocessing, PreprocessingError
from cnntool.errors import CnnToolError, ModelLoadError

CIFAR = {
    "input_size": [3, 32, 32],
    "resize": 32,
    "interpolation": "bilinear",
    "mean": [0.4914, 0.4822, 0.4465],
    "std": [0.247, 0.2435, 0.2616],
}
OWN = "tests.own_models"


def test_schema_round_trip_and_description():
    prep = Preprocessing.from_dict(CIFAR)
    assert (
        prep.input_shape == (3, 32, 32)
        and prep.resize == 32
        and prep.mean == (0.4914, 0.4822, 0.4465)
    )
    assert prep.to_dict() == CIFAR
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    assert prep.describe() == (
        "3×32×32, resize 32 bilinear, mean (0.491, 0.482, 0.447), std (0.247, 0.243, 0.262)"
    )
    none = Preprocessing.from_dict(
        {"input_size": [1, 28, 28], "resize": "none", "mean": [0.1307], "std": [0.3081]}
    )
    assert none.resize is None and none.to_dict()["resize"] == "none"
    assert none.describe() == "1×28×28, no resize, mean (0.131), std (0.308)"
    # [H, W] means 3 channels; a missing resize means "resize to the size" (exactly: no crop,
    # so a 480×640 photo becomes the 48×64 input whole); one mean for all
    short = Preprocessing.from_dict({"input_size": [48, 64], "mean": [0.5], "std": [0.5]})
    assert short.input_shape == (3, 48, 64) and short.resize == (48, 64)
    assert short.mean == (0.5, 0.5, 0.5) and short.to_dict()["resize"] == [48, 64]
    assert short.resized_size(640, 480) == (64, 48) and short.crop_offset(640, 480) == (0, 0)
    assert short.resized_size(300, 300) == (64, 48)  # squashed, as Resize((48, 64)) does
    assert short.describe().startswith("3×48×64, resize to 48×64 bilinear (no crop), mean")


@pytest.mark.parametrize(
    "size, crop_pct", [(224, 0.9), (224, 0.875), (224, 0.95), (288, 1.0), (384, 0.96)]
)
def test_crop_pct_gives_the_resize_timm_computes(size, crop_pct):
    prep = Preprocessing.from_dict({"input_size": [3, size, size], "crop_pct": crop_pct})
    assert prep.resize == math.floor(size / crop_pct)  # timm's transforms_imagenet_eval
    assert {224: {0.9: 248, 0.875: 256, 0.95: 235}}.get(size, {}).get(
        crop_pct, prep.resize
    ) == prep.resize


def test_no_resize_center_crops_and_pads_with_black():
    # a 40×20 image whose pixel (x, y) holds x + 3y: the crop is columns 5..34, and rows -5..24
    # (five black rows above and below)
    values = (np.arange(40)[None, :] + 3 * np.arange(20)[:, None]).astype(np.uint8)
    image = Image.fromarray(values, mode="L")
    prep = Preprocessing(crop=(30, 30), resize=None, mean=(0.0,), std=(1.0,), channels=1)
    pixels = prep.to_pixels(image)[0] * 255
    expected = np.zeros((30, 30))
    expected[5:25] = values[:, 5:35]
    assert torch.equal(pixels.round(), torch.tensor(expected, dtype=torch.float32))
    assert prep.crop_offset(40, 20) == (5, -5)
    assert prep.to_original(0, 0, 40, 20) == (5, -5)
    assert prep.upscale(40, 20) == 1.0
    assert Preprocessing(crop=(32, 32), resize=96).upscale(32, 48) == 3.0


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"input_size": [3, -1, 32]}, "must be positive"),
        (
            {"input_size": [3, 32, 32], "mean": [0.5, 0.5]},
            "mean has 2 values but the input has 3 channels",
        ),
        ({"input_size": [3, 32, 32], "std": [0.2, 0.0, 0.2]}, "must be positive"),
        ({"input_size": [3, 100000, 100000]}, "too large"),
        ({"input_size": [3, 32, 32], "mena": [0.5]}, "unknown keys mena"),
        (
            {"input_size": [3, 32, 32], "interpolation": "lanczos"},
            "unknown interpolation 'lanczos'",
        ),
        ({"input_size": [3, 32, 32], "resize": -3}, "is not a number of pixels"),
        ({"input_size": [3, 32, 32], "crop_pct": 2}, "not a fraction"),
        ({"input_size": "big"}, "is not [C, H, W]"),
        ({"resize": 32}, "has no input_size"),
    ],
)
def test_bad_values_are_one_sentence(bad, words):
    with pytest.raises(
        PreprocessingError, match="^" + ".*" + __import__("re").escape(words)
    ) as info:
        Preprocessing.from_dict(bad, "cifar.json")
    assert "\n" not in str(info.value) and str(info.value).startswith("cifar.json")
    assert isinstance(info.value, CnnToolError)


def test_constructor_validates_too():
    with pytest.raises(PreprocessingError, match="std"):
        Preprocessing(crop=(8, 8), resize=8, std=(0.2, 0.2, 0.0))
    with pytest.raises(PreprocessingError, match="100000×224 pixels is too large"):
        Preprocessing(crop=(100000, 224), resize=256)


def test_command_line_strings_are_parsed_and_checked(tmp_path):
    options = PreprocessingOptions.parse(
        input_size="1x28x28", resize="none", mean="0.5", std="0.25", interpolation="NEAREST"
    )
    assert options.input_size == (1, 28, 28) and options.resize == "none"
    assert options.command_line_fields() == {
        "channels": 1,
        "size": (28, 28),
        "resize": None,
        "interpolation": "nearest",
        "mean": (0.5,),
        "std": (0.25,),
    }
    assert PreprocessingOptions.parse(input_size="32").input_size == (None, 32, 32)
    for kwargs, words in [
        ({"input_size": "3x"}, "not a size"),
        ({"mean": "0.5,x"}, "--mean"),
        ({"resize": "big"}, "--resize 'big'"),
        ({"input_size": "-5"}, "must be positive"),
        ({"input_size": "100000"}, "too large"),
        ({"file": str(tmp_path / "missing.json")}, "does not exist"),
    ]:
        with pytest.raises(PreprocessingError, match=words.replace("(", r"\(")):
            PreprocessingOptions.parse(**kwargs)
    broken = tmp_path / "broken.json"
    broken.write_text('{"input_size": [3, 32, 32],}')
    with pytest.raises(PreprocessingError, match="not valid JSON"):
        PreprocessingOptions.parse(file=str(broken))


def _solid(tmp_path, colour, size=(50, 40), name="solid.png"):
    path = tmp_path / name
    Image.new("RGB", size, colour).save(path)
    return path


def _logits(loaded, path):
    image = Image.open(path)
    with torch.no_grad():
        return loaded.module(loaded.preprocessing(image)[None])[0]


def test_the_guess_is_flagged_and_names_the_options(tmp_path):
    loaded = load_model(f"{OWN}:mean_colour", device="cpu")
    assert loaded.preprocessing == Preprocessing(crop=(224, 224), resize=256)
    assert loaded.preprocessing_guessed
    assert loaded.preprocessing_source == "a guess from the first convolution (3 input channels)"
    line = loaded.preprocessing_line()
    assert line.startswith(
        "preprocessing: 3×224×224, resize 256 bilinear, mean (0.485, 0.456, 0.406)"
    )
    for option in (
        "--input-size",
        "--resize",
        "--mean",
        "--std",
        "--interpolation",
        "--preprocessing",
    ):
        assert option in line
    gray = load_model(f"{OWN}:mean_gray", device="cpu")
    assert gray.preprocessing.input_shape == (1, 28, 28) and gray.preprocessing_guessed
    assert "(1 input channel)" in gray.preprocessing_source
    rgba = load_model(f"{OWN}:mean_colour_rgba", device="cpu")
    assert rgba.preprocessing.input_shape == (4, 224, 224) and rgba.preprocessing.pil_mode == "RGBA"


def test_only_an_input_size_resizes_to_it_and_the_rest_stays_a_guess():
    loaded = load_model(
        f"{OWN}:mean_colour",
        device="cpu",
        preprocessing=PreprocessingOptions(input_size=(None, 32, 32)),
    )
    prep = loaded.preprocessing
    assert prep.input_shape == (3, 32, 32) and prep.resize == (32, 32)  # no 224/256 margin
    assert loaded.preprocessing_guessed and loaded.preprocessing_source == "the command line"
    line = loaded.preprocessing_line()
    assert "its mean and std are a guess" in line and "--mean and --std" in line
    # nobody typed a resize: the line says it was derived, not "from the command line"
    assert "— input size from the command line; resize to the input size, as the command " in line
    assert "resize to 32×32 bilinear (no crop)" in line
    full = load_model(
        f"{OWN}:mean_colour",
        device="cpu",
        preprocessing=PreprocessingOptions(input_size=(None, 32, 32), mean=(0.5,), std=(0.25,)),
    )
    assert not full.preprocessing_guessed and full.preprocessing.mean == (0.5, 0.5, 0.5)
    assert full.preprocessing_line().endswith(
        "— input size, mean and std from the command line; resize to the input size, as the "
        "command line gives no resize"
    )


def test_built_in_and_torchvision_sources():
    lenet = load_model("lenet5-mnist", device="cpu")
    assert lenet.preprocessing_source == "the built-in entry" and not lenet.preprocessing_guessed
    assert lenet.class_names_source == "the built-in entry"
    resnet = load_model("resnet18", device="cpu")
    assert resnet.preprocessing_source == "torchvision's weight metadata"
    assert (resnet.preprocessing.crop, resnet.preprocessing.resize) == ((224, 224), 256)
    # a new size keeps torchvision's 224-of-256 ratio: 320 -> floor(320 * 256 / 224) = 365
    bigger = load_model(
        "resnet18", device="cpu", preprocessing=PreprocessingOptions(input_size=(None, 320, 320))
    )
    assert bigger.preprocessing.resize == 365
    assert bigger.preprocessing_source == "the command line over torchvision's weight metadata"


def test_module_attribute_checkpoint_file_and_command_line_rank_in_that_order(tmp_path):
    # 4. the module's own attribute: 20×20, no resize, mean 0.5, std 0.25; class names too
    spec = f"{OWN}:with_preprocessing_attribute"
    own = load_model(spec, device="cpu")
    assert own.preprocessing_source == "the module's preprocessing attribute"
    assert (
        own.preprocessing.describe()
        == "3×20×20, no resize, mean (0.5, 0.5, 0.5), std (0.25, 0.25, 0.25)"
    )
    assert own.class_names == ["red", "green", "blue"]
    assert own.class_names_source == "the module's class_names attribute"
    path = _solid(tmp_path, (200, 100, 50))
    expected = [(v / 255 - 0.5) / 0.25 for v in (200, 100, 50)]
    assert torch.allclose(_logits(own, path), torch.tensor(expected), atol=1e-5)

    # 3. the checkpoint beats the attribute
    stored = {
        "input_size": [3, 16, 16],
        "resize": 16,
        "mean": [0.2, 0.3, 0.4],
        "std": [0.5, 0.5, 0.5],
    }
    ckpt = save_checkpoint(
        own.module, tmp_path / "ckpt.pt", preprocessing=stored, class_names={"r": 0, "g": 1, "b": 2}
    )
    from_ckpt = load_model(str(ckpt), arch=spec, device="cpu")
    assert from_ckpt.preprocessing_source == "the checkpoint"
    assert from_ckpt.preprocessing == Preprocessing.from_dict(stored)
    assert from_ckpt.class_names == ["r", "g", "b"] and from_ckpt.class_names_source.startswith(
        "the checkpoint"
    )
    expected = [(v / 255 - m) / 0.5 for v, m in zip((200, 100, 50), (0.2, 0.3, 0.4), strict=True)]
    assert torch.allclose(_logits(from_ckpt, path), torch.tensor(expected), atol=1e-5)

    # 2. --preprocessing FILE beats the checkpoint, field by field (here: all but resize)
    cifar = tmp_path / "cifar.json"
    cifar.write_text(
        json.dumps({"input_size": [3, 32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.1, 0.2, 0.4]})
    )
    from_file = load_model(
        str(ckpt), arch=spec, device="cpu", preprocessing=PreprocessingOptions(file=str(cifar))
    )
    assert from_file.preprocessing_source == f"--preprocessing {cifar} over the checkpoint"
    assert from_file.preprocessing.resize == 32  # the checkpoint's ratio (16 of 16) kept
    expected = [(v / 255 - 0.5) / s for v, s in zip((200, 100, 50), (0.1, 0.2, 0.4), strict=True)]
    assert torch.allclose(_logits(from_file, path), torch.tensor(expected), atol=1e-5)

    # 1. the command line beats the file
    both = load_model(
        str(ckpt),
        arch=spec,
        device="cpu",
        preprocessing=PreprocessingOptions(file=str(cifar), std=(1.0,), interpolation="bicubic"),
    )
    assert (
        both.preprocessing.std == (1.0, 1.0, 1.0) and both.preprocessing.interpolation == "bicubic"
    )
    assert both.preprocessing.mean == (0.5, 0.5, 0.5)
    assert both.preprocessing_source.startswith("the command line over --preprocessing")
    assert both.preprocessing_line().startswith("preprocessing: 3×32×32, resize 32 bicubic")


def test_checkpoint_preprocessing_survives_weights_and_safetensors(tmp_path):
    stored = {
        "input_size": [3, 24, 24],
        "resize": 28,
        "interpolation": "bicubic",
        "mean": [0.1, 0.2, 0.3],
        "std": [0.3, 0.2, 0.1],
    }
    net = tests.own_models.mean_colour()
    for name in ("w.pt", "w.safetensors"):
        path = save_checkpoint(
            net, tmp_path / name, preprocessing=stored, class_names=["a", "b", "c"]
        )
        loaded = load_model(f"{OWN}:mean_colour", weights=str(path), device="cpu")
        assert loaded.preprocessing == Preprocessing.from_dict(stored), name
        assert (
            loaded.class_names == ["a", "b", "c"]
            and loaded.preprocessing_source == "the checkpoint"
        )


def test_channel_mismatch_names_both(tmp_path):
    with pytest.raises(ModelLoadError) as info:
        load_model(
            f"{OWN}:mean_gray",
            device="cpu",
            preprocessing=PreprocessingOptions(input_size=(3, 28, 28)),
        )
    message = str(info.value)
    assert "the input has 3 channels (from the command line" in message
    assert "first convolution conv takes 1" in message and "\n" not in message


def test_new_channel_count_needs_matching_mean():
    with pytest.raises(
        PreprocessingError,
        match="the command line gives 1-channel input but the "
        "mean .* from torchvision's weight metadata has 3 values",
    ):
        load_model(
            "resnet18", device="cpu", preprocessing=PreprocessingOptions(input_size=(1, 224, 224))
        )


def test_rgba_and_gray_images_reach_four_and_one_channel_models(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 255, 128, 0
    rgba[..., 3] = np.arange(8)[None, :] * 32  # alpha 0, 32, …, 224 across the columns
    Image.fromarray(rgba, "RGBA").save(folder / "a_transparent.png")
    Image.new("RGB", (8, 8), (60, 120, 180)).save(folder / "b_opaque.png")
    options = PreprocessingOptions(input_size=(4, 8, 8), resize="none", mean=(0.0,), std=(1.0,))
    four = load_model(f"{OWN}:mean_colour_rgba", device="cpu", preprocessing=options)
    dataset = open_data(str(folder))
    batch = next(iter(BatchStream(dataset, four.preprocessing, batch_size=2)))
    with torch.no_grad():
        logits = four.module(batch.inputs)
    # straight (not black-composited) RGB, and the file's own alpha plane
    assert torch.allclose(logits[0], torch.tensor([1.0, 128 / 255, 0.0, 3.5 * 32 / 255]), atol=1e-5)
    assert torch.allclose(logits[1], torch.tensor([60 / 255, 120 / 255, 180 / 255, 1.0]), atol=1e-5)

    gray = load_model(
        f"{OWN}:mean_gray",
        device="cpu",
        preprocessing=PreprocessingOptions(input_size=(1, 8, 8), resize="none"),
    )
    luma = (60 * 299 + 120 * 587 + 180 * 114) / 1000  # PIL's L conversion
    batch = next(iter(BatchStream(open_data(str(folder / "b_opaque.png")), gray.preprocessing)))
    with torch.no_grad():
        value = gray.module(batch.inputs)[0, 0].item()
    assert abs(value - round(luma) / 255) < 1e-5  # mean 0, std 1 from the 1-channel guess
