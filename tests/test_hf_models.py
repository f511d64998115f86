"""Hugging Face transformers models as MODEL (#25): a tiny ResNetForImageClassification trained
here for seconds on coloured noise, saved with `save_pretrained` beside a ConvNeXT image
processor's preprocessor_config.json, as a user's fine-tune would be. Nothing is downloaded.

Anchors: the HF image processor itself (accuracy of a plain loop over its output, and its PIL
backend's tensors), torch's FlopCounterMode (MACs), torchattacks (FGSM), a forward hook on the
original model (activations) and the BatchNorm formula (folded filters)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cnntool.core.loading import hf_models, hf_processor
from cnntool.core.loading.hf_models import processor_feed
from cnntool.core.loading.models import load_model
from cnntool.core.loading.preprocessing_sources import PreprocessingOptions
from cnntool.errors import ModelLoadError, UntrustedCodeError

transformers = pytest.importorskip("transformers")

CLASSES = ("blue", "green", "red")  # folder order; the model's id2label says the same names
CHANNEL = {"red": 0, "green": 1, "blue": 2}
# image sizes (H, W): resized so that the shorter side is 36, then cropped to 32; HF and
# torchvision round a crop's offset differently only when the margin is 3 mod 4 (none here)
SIZES = [(40, 40), (36, 48), (48, 36), (45, 60), (50, 40)]
MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.2, 0.3]


def _picture(rng, size, channel) -> Image.Image:
    pixels = rng.integers(0, 110, (*size, 3))
    pixels[..., channel] += 140
    return Image.fromarray(pixels.astype(np.uint8))


def _pil_processor(folder):
    """The folder's image processor on transformers' PIL/numpy backend."""
    if int(transformers.__version__.split(".")[0]) >= 5:
        return transformers.AutoImageProcessor.from_pretrained(folder, backend="pil")
    return transformers.AutoImageProcessor.from_pretrained(folder, use_fast=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(folder of the saved model, folder of labelled test images)."""
    root = tmp_path_factory.mktemp("hf")
    rng = np.random.default_rng(25)
    torch.manual_seed(0)
    config = transformers.ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        num_labels=3,
        id2label=dict(enumerate(CLASSES)),
        label2id={name: i for i, name in enumerate(CLASSES)},
    )
    model = transformers.ResNetForImageClassification(config)
    processor = transformers.ConvNextImageProcessor(
        size={"shortest_edge": 32}, crop_pct=0.875, resample=2, image_mean=MEAN, image_std=STD
    )
    folder = root / "model"
    processor.save_pretrained(folder)
    train = [
        (_picture(rng, SIZES[i % 5], CHANNEL[c]), k)
        for k, c in enumerate(CLASSES)
        for i in range(12)
    ]
    x = torch.as_tensor(np.stack(_pil_processor(folder)([p for p, _ in train])["pixel_values"]))
    y = torch.tensor([k for _, k in train])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y).backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(folder)
    data = root / "data"
    for name in CLASSES:
        (data / name).mkdir(parents=True)
        for i, size in enumerate(SIZES):
            channel = CHANNEL[name] if i < 4 else (CHANNEL[name] + 1) % 3  # one off-colour each
            _picture(rng, size, channel).save(data / name / f"{i}.png")
    return folder, data


def _plain_loop(folder, data, processor) -> list[int]:
    """Top classes by the HF model and processor alone, in predict's order."""
    model = transformers.ResNetForImageClassification.from_pretrained(folder).eval()
    tops = []
    for name in CLASSES:
        for path in sorted((data / name).glob("*.png")):
            x = torch.as_tensor(
                np.asarray(processor(Image.open(path), return_tensors="np")["pixel_values"])
            )
            with torch.no_grad():
                tops.append(int(model(pixel_values=x).logits.argmax(1)))
    return tops


def _cli(*args):
    from cnntool.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.slow
def test_predict_equals_a_plain_loop_over_the_hf_image_processor(saved):
    folder, data = saved
    result = _cli("predict", folder, data, "--format", "jsonl")
    assert result.exit_code == 0, (result.output, result.exception)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    ours = [row["classes"][0]["index"] for row in rows]
    labels = [k for k in range(3) for _ in SIZES]
    default = _plain_loop(folder, data, transformers.AutoImageProcessor.from_pretrained(folder))
    accuracy = sum(r["correct"] for r in rows) / len(rows)
    assert accuracy == np.mean(np.array(default) == labels)
    assert 0.5 < accuracy < 1  # trained, and the off-colour images fool it
    assert ours == _plain_loop(folder, data, _pil_processor(folder))
    assert {row["classes"][0]["name"] for row in rows} <= set(CLASSES)
    err = result.stderr
    assert f"— from {folder}/preprocessor_config.json" in err
    assert "resize 36 = int(32 / 0.875)" in err and "image_mean [0.5, 0.45, 0.4]" in err
    assert "returns a ModelOutput: cnntool uses its .logits" in err
    assert "BatchNorm folded" in err and "warning" not in err


@pytest.mark.slow
def test_its_input_tensors_equal_the_processor_pil_backend(saved):
    folder, data = saved
    loaded = load_model(str(folder))
    assert loaded.preprocessing.to_dict()["resize"] == 36
    processor = _pil_processor(folder)
    for path in sorted(data.glob("*/*.png")):
        image = Image.open(path)
        theirs = torch.as_tensor(
            np.asarray(processor(image, return_tensors="np")["pixel_values"][0])
        )
        assert torch.allclose(loaded.preprocessing(image), theirs, atol=1e-5), path


@pytest.mark.slow
def test_profile_counts_what_flop_counter_counts(saved):
    from torch.utils.flop_counter import FlopCounterMode

    folder, _ = saved
    result = _cli("profile", folder, "--format", "jsonl")
    assert result.exit_code == 0, (result.output, result.exception)
    rows = {json.loads(line)["name"]: json.loads(line) for line in result.stdout.splitlines()}
    original = transformers.ResNetForImageClassification.from_pretrained(folder).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        original(pixel_values=torch.zeros(1, 3, 32, 32))
    assert rows["total"]["macs"] * 2 == counter.get_total_flops()
    assert rows["resnet.embedder.embedder.convolution"]["macs"] == 16 * 16 * 8 * 3 * 49


@pytest.mark.slow
def test_fgsm_equals_torchattacks_on_the_original_model(saved):
    torchattacks = pytest.importorskip("torchattacks")
    import cnntool

    folder, data = saved
    model = cnntool.load_model(str(folder), device="cpu")
    attacked, summaries = cnntool.attack_dataset(model, str(data), "fgsm", eps=48 / 255, workers=0)
    original = transformers.ResNetForImageClassification.from_pretrained(folder).eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (MEAN, STD))

    class Pixels(torch.nn.Module):
        def forward(self, pixels):
            return original(pixel_values=(pixels - mean) / std).logits

    clean = torch.stack([a.clean for a in attacked])
    labels = torch.tensor([a.label for a in attacked])
    theirs = torchattacks.FGSM(Pixels().eval(), eps=48 / 255)(clean, labels)
    ours = torch.stack([a.adversarial for a in attacked])
    # BatchNorm folded in cnntool's run: a gradient at rounding level may flip a pixel's sign
    assert (ours == theirs).float().mean() > 0.999
    with torch.no_grad():
        assert [a.adv_pred for a in attacked] == Pixels()(theirs).argmax(1).tolist()
    assert summaries[0].images == 15 and (ours - clean).abs().amax() == pytest.approx(48 / 255)


@pytest.mark.slow
def test_activations_and_folded_filters_equal_the_original_model(saved):
    from cnntool.tasks.activations import feature_maps
    from cnntool.tasks.filters import filters

    folder, data = saved
    loaded = load_model(str(folder))
    image = loaded.preprocessing(Image.open(next(data.glob("red/*.png"))))
    layer = "resnet.encoder.stages.0"
    maps = feature_maps(loaded.module, image, layer)
    original = transformers.ResNetForImageClassification.from_pretrained(folder).eval()
    seen = []
    handle = original.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        original(pixel_values=image[None])
    handle.remove()
    assert torch.allclose(maps.maps, seen[0][0], atol=1e-6)
    folded = filters(loaded.module, fold_bn=True)
    conv = original.resnet.embedder.embedder.convolution
    bn = original.resnet.embedder.embedder.normalization
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    expected = conv.weight * scale.view(-1, 1, 1, 1)
    assert folded.layer == "resnet.embedder.embedder.convolution"
    assert torch.allclose(folded.weights, expected.detach(), atol=1e-6)
    result = _cli(
        "visualize",
        "activations",
        folder,
        next(data.glob("red/*.png")),
        "--layer",
        layer,
        "-o",
        folder.parent / "act",
    )
    assert result.exit_code == 0, (result.output, result.exception)


@pytest.mark.slow
def test_a_transformers_model_from_user_code_returns_its_logits(saved, tmp_path):
    folder, data = saved
    code = tmp_path / "hf_code.py"
    code.write_text(
        "import transformers\n"
        "def net():\n"
        f"    return transformers.ResNetForImageClassification.from_pretrained({str(folder)!r})\n"
    )
    options = PreprocessingOptions(file=str(folder / "preprocessor_config.json"))
    loaded = load_model(f"{code}:net", trust_code=True, preprocessing=options)
    assert (
        "ResNetForImageClassification returns a ModelOutput: cnntool uses its .logits"
        in loaded.notes
    )
    assert any("(ConvNextImageProcessor): resize 36" in note for note in loaded.notes)
    assert loaded.preprocessing == load_model(str(folder)).preprocessing
    original = transformers.ResNetForImageClassification.from_pretrained(folder).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), original(pixel_values=x).logits)
    assert loaded.check_forward() == 3
    result = _cli(
        "attack",
        "fgsm",
        f"{code}:net",
        data,
        "--trust-code",
        "--preprocessing",
        folder / "preprocessor_config.json",
        "-o",
        tmp_path / "adv",
    )
    assert result.exit_code == 0, (result.output, result.exception)


# --- preprocessor_config.json alone ------------------------------------------------------------


def test_a_resize_to_exactly_h_w_is_reproduced_or_said():
    data = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": 32, "width": 48},
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    feed = processor_feed(data, "p.json")
    assert feed.fields["input_size"] == [3, 32, 48] and feed.fields["interpolation"] == "bicubic"
    assert feed.origins[0] == 'resize to exactly 32×48 from size {"height": 32, "width": 48}'
    if hf_models.exact_resize_supported():
        assert feed.fields["resize"] == [32, 48] and not feed.approximations
    else:
        assert feed.fields["resize"] == 32
        assert "resizes each image to exactly 32×48" in feed.approximations[0]


def test_unrescaled_pixels_fold_into_mean_and_std():
    """do_rescale false: HF feeds (x − mean) / std on 0–255 values; on 0–1 pixels p = x / 255
    that is (p − mean/255) / (std/255)."""
    data = {
        "image_processor_type": "BitImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 36},
        "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32},
        "do_rescale": False,
        "do_normalize": True,
        "image_mean": [120, 110, 100],
        "image_std": [50, 60, 70],
        "resample": 1,
    }
    feed = processor_feed(data, "p.json")
    assert feed.fields["mean"] == pytest.approx([120 / 255, 110 / 255, 100 / 255])
    assert feed.fields["std"] == pytest.approx([50 / 255, 60 / 255, 70 / 255])
    assert (feed.fields["resize"], feed.fields["input_size"]) == (36, [3, 32, 32])
    assert "do_rescale false (0–255 values)" in feed.origins[-1]
    assert feed.fields["interpolation"] == "bicubic"
    assert any("lanczos" in a and "bicubic" in a for a in feed.approximations)


def test_a_step_cnntool_does_not_have_is_a_warning_and_a_missing_key_is_named(monkeypatch):
    data = {
        "image_processor_type": "MobileViTImageProcessor",
        "do_resize": False,
        "do_center_crop": True,
        "crop_size": {"height": 32, "width": 32},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": False,
        "do_flip_channel_order": True,
    }
    feed = processor_feed(data, "p.json")
    assert (feed.fields["resize"], feed.fields["mean"], feed.fields["std"]) == (
        "none",
        [0.0],
        [1.0],
    )
    assert any("do_flip_channel_order is true" in a for a in feed.approximations)
    assert any("MobileViTImageProcessor may resize" in a for a in feed.approximations)
    monkeypatch.setattr(hf_processor, "transformers_available", lambda: False)
    monkeypatch.setattr(hf_processor, "_class_defaults", lambda kind: None)
    with pytest.raises(ModelLoadError, match=r"does not set do_resize.*cnntool\[hf\]"):
        processor_feed({"image_processor_type": "ViTImageProcessor", "image_mean": [0.5]}, "p.json")


def test_without_transformers_a_folder_is_one_sentence_naming_the_extra(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    config = {"architectures": ["ResNetForImageClassification"], "model_type": "resnet"}
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(hf_models, "transformers_available", lambda: False)
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(folder))
    text = str(caught.value)
    assert "Hugging Face transformers model (ResNetForImageClassification)" in text
    assert text.endswith("(pip install 'cnntool[hf]')")


@pytest.mark.parametrize(
    ("config", "error", "words"),
    [
        ({"architectures": ["NoSuchForImageClassification"]}, ModelLoadError, "does not have"),
        (
            {"architectures": ["NoSuchForImageClassification"], "auto_map": {"a": "b.C"}},
            UntrustedCodeError,
            "pass --trust-code only if you trust this folder",
        ),
        ({"architectures": ["ResNetModel"]}, ModelLoadError, "has no classification head"),
    ],
)
def test_a_folder_that_is_no_classifier_or_needs_its_own_code_is_one_sentence(
    tmp_path, config, error, words
):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(error, match=words):
        load_model(str(tmp_path))


def test_a_folder_naming_only_its_model_type_loads_the_same_classifier(saved, tmp_path):
    import shutil

    folder, _ = saved
    copy = tmp_path / "typed"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "config.json").read_text())
    del config["architectures"]
    (copy / "config.json").write_text(json.dumps(config))
    x = torch.rand(2, 3, 28, 28)
    want = transformers.ResNetForImageClassification.from_pretrained(folder).eval()
    got = load_model(str(copy))
    with torch.no_grad():
        torch.testing.assert_close(got.module(x), want(pixel_values=x).logits)
