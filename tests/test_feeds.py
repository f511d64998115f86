"""How images are fed (#25): Caffe-style models (BGR, 0–255, mean subtraction only) in every
command that feeds images, non-square inputs resized to the input size (no crop), fractions in
--mean, the channel check of a model whose first convolution is functional, and receptive fields
through a channel flip in forward.

The models are hand-set (tests/own_models.py), so every answer is computed here by a plain loop:
numpy for the Caffe feed, torchvision's Resize((H, W)) for the non-square one."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import tests.own_models  # noqa: F401  (imported: `tests.own_models:NAME` specs need no --trust-code)
from cnntool import save_checkpoint
from cnntool.core.data import BatchStream, open_data
from cnntool.core.loading.models import load_model
from cnntool.core.loading.preprocessing_sources import PreprocessingOptions
from cnntool.core.option_values import parse_floats
from cnntool.core.preprocessing import Preprocessing, PreprocessingError
from cnntool.errors import ModelLoadError
from tests.helpers import ROOT

OWN = "tests.own_models"
OWN_FILE = str(ROOT / "tests" / "own_models.py")
CAFFE_MEAN = (103.939, 116.779, 123.68)  # Caffe's VGG16, B, G, R
# MeanColourNet's logits are its input's channel means: in BGR order for a BGR feed
BGR_CLASSES = ["blue", "green", "red"]
CAFFE = {
    "input_size": [3, 8, 8],
    "channel_order": "bgr",
    "range": 255,
    "mean": list(CAFFE_MEAN),
    "std": [1.0],
}


# --- Caffe-style feeds ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """36 noisy 8×8 colour squares in folders red/green/blue by their largest raw channel."""
    folder = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for n in range(36):
        base = rng.integers(40, 216, size=3)
        pixels = np.clip(base + rng.integers(-30, 31, size=(8, 8, 3)), 0, 255).astype(np.uint8)
        label = ["red", "green", "blue"][int(np.argmax(pixels.reshape(-1, 3).mean(0)))]
        (folder / label).mkdir(exist_ok=True)
        Image.fromarray(pixels).save(folder / label / f"{n:02d}.png")
    return folder


def _caffe_by_hand(folder) -> tuple[float, dict[str, np.ndarray]]:
    """A Caffe user's own loop: uint8 RGB -> BGR, as float, minus the mean; MeanColourNet's
    logits are the channel means of that."""
    logits, correct = {}, 0
    files = sorted(folder.glob("*/*.png"))
    for path in files:
        bgr = np.asarray(Image.open(path).convert("RGB"), np.float32)[..., ::-1]
        logits[path.name] = (bgr - np.array(CAFFE_MEAN, np.float32)).mean((0, 1))
        correct += BGR_CLASSES[int(np.argmax(logits[path.name]))] == path.parent.name
    return correct / len(files), logits


def _caffe_model(**extra):
    options = PreprocessingOptions(
        input_size=(None, 8, 8),
        channel_order="bgr",
        input_range=255,
        mean=CAFFE_MEAN,
        std=(1.0,),
        **extra,
    )
    loaded = load_model(f"{OWN}:mean_colour", device="cpu", preprocessing=options)
    loaded.class_names = BGR_CLASSES
    return loaded


def _logits(loaded, folder) -> dict[str, np.ndarray]:
    stream = BatchStream(open_data(str(folder)), loaded.preprocessing, batch_size=16)
    found = {}
    for batch in stream:
        with torch.no_grad():
            out = loaded.module(batch.inputs).numpy()
        for index, row in zip(batch.indices, out, strict=True):
            found[Path(stream.dataset.paths[index]).name] = row
    return found


def test_a_caffe_feed_from_flags_json_and_checkpoint_equals_the_plain_loop(colours, tmp_path):
    expected, by_hand = _caffe_by_hand(colours)
    assert 0.3 < expected < 1  # the mean subtraction changes some answers
    flags = _caffe_model()
    assert flags.preprocessing.describe() == (
        "3×8×8, resize to 8×8 bilinear (no crop), BGR, 0–255, mean (103.939, 116.779, 123.68), "
        "std (1, 1, 1)"
    )
    ours = _logits(flags, colours)
    for name, row in by_hand.items():
        np.testing.assert_allclose(ours[name], row, rtol=0, atol=1e-4)
    # the same feed stored by save_checkpoint and given as --preprocessing JSON
    net = tests.own_models.mean_colour()
    for suffix in ("pt", "safetensors"):
        saved = save_checkpoint(net, tmp_path / f"caffe.{suffix}", preprocessing=CAFFE)
        loaded = load_model(str(saved), arch=f"{OWN}:mean_colour", device="cpu")
        assert loaded.preprocessing == flags.preprocessing and not loaded.preprocessing_guessed
    stored = torch.load(tmp_path / "caffe.pt", weights_only=True)["preprocessing"]
    assert (stored["channel_order"], stored["range"]) == ("bgr", 255)
    (tmp_path / "caffe.json").write_text(json.dumps(CAFFE))
    from_file = load_model(
        f"{OWN}:mean_colour",
        device="cpu",
        preprocessing=PreprocessingOptions(file=str(tmp_path / "caffe.json")),
    )
    assert from_file.preprocessing == flags.preprocessing


@pytest.mark.slow
def test_predict_on_the_command_line_equals_the_plain_loop(colours, tmp_path, cnntool):
    expected, _ = _caffe_by_hand(colours)
    (tmp_path / "classes.txt").write_text("\n".join(BGR_CLASSES))
    result = cnntool(
        "predict",
        f"{OWN_FILE}:mean_colour",
        "--trust-code",
        colours,
        "--input-size",
        "8",
        "--channel-order",
        "bgr",
        "--range",
        "255",
        "--mean",
        ",".join(map(str, CAFFE_MEAN)),
        "--std",
        "1",
        "--classes",
        tmp_path / "classes.txt",
        "--format",
        "jsonl",
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sum(r["correct"] for r in rows) / len(rows) == expected
    assert "BGR, 0–255, mean (103.939, 116.779, 123.68), std (1, 1, 1)" in result.stderr
    assert "warning" not in result.stderr, result.stderr
    # the Caffe mean on the default [0, 1] range: one sentence naming the fix, exit 1
    wrong = cnntool(
        "predict", f"{OWN_FILE}:mean_colour", "--trust-code", colours, "--input-size", "8",
        "--mean", "104,117,123", "--std", "1",
    )  # fmt: skip
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "the mean (104, 117, 123) (from the command line) is above 1" in wrong.stderr
    assert "use --range 255" in wrong.stderr


def test_fractions_in_mean_and_ranges_that_contradict_the_mean():
    assert parse_floats("104/255,117/255,123/255") == (104 / 255, 117 / 255, 123 / 255)
    assert PreprocessingOptions.parse(mean="104/255", std="0.5").mean == (104 / 255,)
    with pytest.raises(ValueError, match="104/255"):
        parse_floats("104/0")
    with pytest.raises(PreprocessingError, match=r"is above 1.*use --range 255"):
        load_model(
            f"{OWN}:mean_colour",
            device="cpu",
            preprocessing=PreprocessingOptions(mean=(104.0, 117.0, 123.0), std=(1.0,)),
        )
    # 0–255 with the guessed ImageNet mean: give the mean too
    with pytest.raises(PreprocessingError, match=r"the range 255 \(from the command line\)"):
        load_model(
            f"{OWN}:mean_colour", device="cpu", preprocessing=PreprocessingOptions(input_range=255)
        )
    with pytest.raises(PreprocessingError, match="bgr needs 3"):
        Preprocessing(crop=(8, 8), resize=8, mean=(0,), std=(1,), channels=1, channel_order="bgr")
    with pytest.raises(PreprocessingError, match="range 3 is not 1"):
        Preprocessing.from_dict({"input_size": 8, "range": 3})


def test_every_command_that_feeds_images_gets_the_caffe_feed(colours):
    """Attack, features, projections, occlusion and filters: each in the image's terms."""
    import torchattacks

    from cnntool.tasks.attack import eps_in_model_units, fgsm
    from cnntool.tasks.dataset_scans import features
    from cnntool.tasks.filters import filters, in_image_order
    from cnntool.tasks.occlusion import fill_pixels
    from cnntool.tasks.projection import Target, project_image

    loaded = _caffe_model()
    prep = loaded.preprocessing
    files = sorted(colours.glob("*/*.png"))
    pixels = torch.stack([prep.to_pixels(Image.open(path)) for path in files])
    labels = torch.tensor([BGR_CLASSES.index(path.parent.name) for path in files])
    assert torch.allclose(prep.denormalize(prep.normalize(pixels)), pixels, atol=1e-6)

    # FGSM on [0, 1] RGB pixels, clamped there (= the raw 0–255 range), bit for bit
    # torchattacks' FGSM on the model a Caffe user would wrap for it
    class PixelsToCaffe(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, p):
            mean = torch.tensor(CAFFE_MEAN).view(1, 3, 1, 1)
            return self.net((p[:, [2, 1, 0]] * 255 - mean) / 1.0)

    theirs = torchattacks.FGSM(PixelsToCaffe(loaded.module), eps=8 / 255)(pixels, labels)
    assert torch.equal(fgsm(loaded, pixels, labels, 8 / 255), theirs)
    assert "ε = 8 of the model's 0–255 input levels" in eps_in_model_units(prep, [8 / 255])

    # features of the model's first layer: the mean-subtracted BGR colour of each image
    found = features(loaded, open_data(str(colours)), layer="conv", batch_size=16)
    _, by_hand = _caffe_by_hand(colours)
    assert len(found.paths) == len(by_hand)
    for path, row in zip(found.paths, found.features, strict=True):
        np.testing.assert_allclose(row, by_hand[path.rpartition("/")[2]], atol=1e-4)

    # a saliency map of the blue logit lives in the image's blue channel (index 2 of RGB)
    (projection,) = project_image(loaded, pixels[0], "saliency", [Target.logit(0)])
    assert projection.map[2].abs().min() > 0 and projection.map[:2].abs().max() == 0
    # occlusion's "0" fill: what the model sees as zero input, the mean colour in RGB [0, 1]
    assert torch.allclose(
        fill_pixels("0", pixels[0], prep), torch.tensor(CAFFE_MEAN[::-1]) / 255, atol=1e-7
    )
    # the first layer's filters shown as RGB: the blue output's weight is on the blue input
    shown = in_image_order(filters(loaded.module, "conv"), loaded).weights[:, :, 0, 0]
    assert torch.equal(shown, torch.eye(3)[:, [2, 1, 0]])


# --- non-square inputs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    """Photos with a bright bar along one edge, 96×128 (the input's aspect) and 90×90."""
    folder = tmp_path_factory.mktemp("bars")
    rng = np.random.default_rng(1)
    for n in range(16):
        height, width = (96, 128) if n % 2 else (90, 90)
        pixels = rng.integers(0, 60, size=(height, width, 3)).astype(np.uint8)
        edge = ["top", "bottom", "left", "right"][n % 4]
        band = {
            "top": np.s_[:8],
            "bottom": np.s_[-8:],
            "left": np.s_[:, :10],
            "right": np.s_[:, -10:],
        }
        pixels[band[edge]] = 250
        (folder / edge).mkdir(exist_ok=True)
        Image.fromarray(pixels).save(folder / edge / f"{n:02d}.png")
    return folder


def test_a_non_square_input_is_resized_to_it_not_cropped(bars, tmp_path, cnntool):
    from torchvision import transforms

    resize = transforms.Compose([transforms.Resize((48, 64)), transforms.ToTensor()])
    net = tests.own_models.edge_bars()
    files = sorted(bars.glob("*/*.png"))
    with torch.no_grad():
        predicted = [
            net.class_names[int(net(resize(Image.open(p).convert("RGB"))[None]).argmax())]
            for p in files
        ]
    expected = sum(p == f.parent.name for p, f in zip(predicted, files, strict=True)) / len(files)
    assert expected == 1.0
    # torchvision's pixels, through the data loader too
    loaded = load_model(
        f"{OWN}:edge_bars",
        device="cpu",
        preprocessing=PreprocessingOptions(input_size=(None, 48, 64), mean=(0.0,), std=(1.0,)),
    )
    assert loaded.preprocessing.resize == (48, 64)
    batch = next(iter(BatchStream(open_data(str(bars)), loaded.preprocessing, batch_size=16)))
    theirs = torch.stack([resize(Image.open(files[i]).convert("RGB")) for i in batch.indices])
    assert torch.equal(batch.inputs, theirs)
    # a save_checkpoint preprocessing without resize means the same
    saved = save_checkpoint(net, tmp_path / "bars.pt", preprocessing={"input_size": [3, 48, 64]})
    assert load_model(str(saved), arch=f"{OWN}:edge_bars").preprocessing.resize == (48, 64)

    result = cnntool(
        "predict", f"{OWN_FILE}:edge_bars", "--trust-code", bars, "--input-size", "48,64",
        "--mean", "0", "--std", "1", "--format", "jsonl",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sum(r["correct"] for r in rows) / len(rows) == expected
    line = next(line for line in result.stderr.splitlines() if "preprocessing:" in line)
    assert "3×48×64, resize to 48×64 bilinear (no crop)" in line
    # nobody typed a resize, and the line does not say anybody did
    assert "input size, mean and std from the command line; resize to the input size, as " in line


# --- the channel check and receptive fields ------------------------------------------------------


def test_a_functional_first_convolution_decides_the_channel_check(cnntool):
    loaded = load_model(
        f"{OWN}:functional_stem",
        device="cpu",
        preprocessing=PreprocessingOptions(input_size=(3, 32, 32)),
    )
    assert loaded.input_shape == (3, 32, 32) and loaded.first_conv == ("w1", 3)
    with pytest.raises(ModelLoadError, match="first convolution w1 takes 3"):
        load_model(
            f"{OWN}:functional_stem",
            device="cpu",
            preprocessing=PreprocessingOptions(input_size=(1, 32, 32)),
        )
    result = cnntool(
        "profile", f"{OWN_FILE}:functional_stem", "--trust-code", "--input-size", "3,32,32",
        "--summary", "--format", "jsonl",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "input 3×32×32 — from the command line" in result.stderr


@pytest.mark.parametrize("how", ["index", "flip"])
def test_receptive_fields_survive_a_channel_flip_in_forward(how):
    from cnntool.core.receptive_field import ReceptiveField, receptive_fields, why_nonlocal
    from cnntool.tasks.top_patches import no_field_warning

    model = tests.own_models.FlipsToBgr(how).eval()
    fields = receptive_fields(model, (3, 32, 32))
    # conv 3×3 pad 1: 3 px; pool 2: 4 px, jump 2; conv 3×3: 4 + 2·2 = 8 px, start 0.5 + 2 = 2.5
    assert fields["conv1"] == ReceptiveField((3, 3), (1, 1), (0.0, 0.0))
    assert fields["conv2"] == ReceptiveField((8, 8), (2, 2), (2.5, 2.5))
    # the classifier has none, and the warning names the global mean, not the flip
    assert "fc" not in fields and why_nonlocal(model, "fc", (3, 32, 32)).startswith("aten.mean")
    assert "it is lost at aten.mean" in no_field_warning(model, "fc", (3, 32, 32))


def test_a_flip_of_height_or_width_is_named_as_where_the_field_went():
    from cnntool.core.receptive_field import receptive_fields, why_nonlocal

    class Mirror(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return self.conv(x.flip(3))

    assert "conv" not in receptive_fields(Mirror(), (3, 16, 16))
    assert why_nonlocal(Mirror(), "conv", (3, 16, 16)) == (
        "aten.flip of height or width in the model's own forward"
    )
