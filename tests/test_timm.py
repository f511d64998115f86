"""timm models: built offline with pretrained=False, preprocessed exactly as timm's own eval
transform (resolve_data_config + create_transform), heads resized for fine-tuned weights."""

import socket

import pytest
import torch
from PIL import Image

from cnntool.core.loading.models import check_forward, list_models, load_model
from cnntool.core.samples import photos
from cnntool.errors import UnknownNameError
from tests.timm_finetune import ARCH, FEED

timm = pytest.importorskip("timm")
from timm.data import create_transform, resolve_data_config  # noqa: E402


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize(
    "name, resize, interpolation, mean",
    [
        ("vit_tiny_patch16_224", 248, "bicubic", (0.5, 0.5, 0.5)),  # crop_pct 0.9
        ("resnet18", 235, "bicubic", (0.485, 0.456, 0.406)),  # crop_pct 0.95
    ],
)
def test_logits_equal_timms_own_eval_pipeline(
    tmp_path, no_network, name, resize, interpolation, mean
):
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False, num_classes=10).eval()
    weights = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), weights)
    loaded = load_model(f"timm:{name}", weights=str(weights), device="cpu")
    # a 10-class state dict says nothing of its feed: timm's pretrained_cfg is a guess (#25)
    assert loaded.preprocessing_guessed
    assert loaded.preprocessing_source == f"a guess from timm's pretrained_cfg for {name}"
    assert f"{name}.pth has 10 classes, not the 1000" in loaded.preprocessing_line()
    prep = loaded.preprocessing
    assert (prep.crop, prep.resize, prep.interpolation, prep.mean) == (
        (224, 224),
        resize,
        interpolation,
        mean,
    )
    assert any("rebuilt the classifier" in note and "10 outputs" in note for note in loaded.notes)
    transform = create_transform(**resolve_data_config({}, model=reference))
    images = [Image.open(path).convert("RGB") for path in photos()[:3]]
    theirs = torch.stack([transform(image) for image in images])
    ours = torch.stack([prep(image) for image in images])
    assert torch.equal(ours, theirs)
    with torch.no_grad():
        assert torch.equal(loaded.module(ours), reference(theirs))
    assert check_forward(loaded) == 10


def test_nothing_is_downloaded_and_pretrained_is_false(monkeypatch, no_network):
    calls = []
    real = timm.create_model

    def spy(name, **kwargs):
        calls.append(kwargs)
        return real(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    loaded = load_model("timm:resnet18", device="cpu", num_classes=5)
    assert calls == [{"pretrained": False, "num_classes": 5}]
    assert loaded.random_weights and loaded.module.fc.out_features == 5
    assert loaded.class_names is None  # 5 outputs: not ImageNet's names
    imagenet = load_model("timm:resnet18", device="cpu")
    assert (
        imagenet.class_names[0] == "tench"
        and imagenet.class_names_source == "timm's ImageNet-1k classes"
    )
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_installed_timm_code_spec_gets_timms_preprocessing_without_trust():
    loaded = load_model("timm.models:vit_tiny_patch16_224", device="cpu")
    assert loaded.preprocessing_source == "timm's pretrained_cfg"
    assert loaded.preprocessing.resize == 248 and loaded.preprocessing.mean == (0.5, 0.5, 0.5)


def test_timm_names_and_listing():
    with pytest.raises(UnknownNameError, match="resnet18"):
        load_model("timm:resnet181", device="cpu")
    record = [r for r in list_models() if r["kind"] == "timm"]
    assert (
        record
        and record[0]["available"]
        and record[0]["weights"].startswith(f"timm {timm.__version__}")
    )


def test_a_timm_hub_folder_loads_with_its_config(tmp_path):
    import json

    from safetensors.torch import save_file

    torch.manual_seed(1)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    save_file(reference.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "architecture": "resnet18",
                "num_classes": 3,
                "label_names": ["a", "b", "c"],
                "pretrained_cfg": {
                    "input_size": [3, 160, 160],
                    "crop_pct": 1.0,
                    "interpolation": "bilinear",
                    "mean": [0.5, 0.5, 0.5],
                    "std": [0.5, 0.5, 0.5],
                },
            }
        )
    )
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.class_names == ["a", "b", "c"]
    assert (loaded.preprocessing.crop, loaded.preprocessing.resize) == ((160, 160), 160)
    assert loaded.notes[0] == f"architecture timm:resnet18 from {tmp_path}/config.json"
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), reference(x))


# --- a fine-tune fed as it was trained (#25) -------------------------------------------------


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """test_efficientnet fine-tuned for 11 hues at 32 px, mean/std 0.5 (tests/timm_finetune.py),
    saved three ways, with 44 labelled test images."""
    from tests import timm_finetune

    out = tmp_path_factory.mktemp("timm_ft")
    model, optimizer = timm_finetune.fine_tune()
    saved = timm_finetune.save_all_ways(model, optimizer, out)
    return model, saved, timm_finetune.write_test_images(out / "test")


def _accuracy_with(model, transform, folder) -> tuple[float, list[int]]:
    """A plain loop: timm's own transform, the model, argmax; class = sorted folder index."""
    predictions, correct = [], 0
    classes = sorted(p.name for p in folder.iterdir())
    files = sorted(folder.glob("*/*.png"))
    for path in files:
        x = transform(Image.open(path).convert("RGB"))[None]
        with torch.no_grad():
            predicted = int(model(x).argmax(1))
        predictions.append(predicted)
        correct += predicted == classes.index(path.parent.name)
    return correct / len(files), predictions


def _predict(cnntool, *args) -> tuple[float, list[int], str]:
    import json

    result = cnntool("predict", *args, "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    rows.sort(key=lambda r: r["path"])
    return (
        sum(r["correct"] for r in rows) / len(rows),
        [r["classes"][0]["index"] for r in rows],
        result.stderr,
    )


@pytest.mark.slow
def test_a_fine_tune_is_fed_as_its_saved_config_and_train_args_say(fine_tuned, cnntool):
    import json

    model, saved, images = fine_tuned
    # save_for_hf's config.json, as timm would read it back
    config = json.loads((saved["hub"] / "config.json").read_text())
    transform = create_transform(**resolve_data_config(pretrained_cfg=config["pretrained_cfg"]))
    expected, predictions = _accuracy_with(model, transform, images)
    assert expected >= 0.8  # 11 classes: chance is 9%
    for form, args in {
        "hub folder": [saved["hub"]],
        "--weights model.safetensors": [f"timm:{ARCH}", "--weights", saved["hub_weights"]],
    }.items():
        accuracy, ours, stderr = _predict(cnntool, *args, images)
        assert (accuracy, ours) == (expected, predictions), form
        assert "preprocessing: 3×32×32, resize 40 bilinear, mean (0.5, 0.5, 0.5)" in stderr, form
        assert f"{saved['hub'] / 'config.json'} (timm's save_for_hf)" in stderr, form
        assert "warning" not in stderr, (form, stderr)

    # train.py's checkpoint: its args and its arch, read without --trust-code
    args = torch.load(saved["train"], weights_only=False)["args"]
    transform = create_transform(**resolve_data_config(vars(args), model=model))
    assert _accuracy_with(model, transform, images) == (expected, predictions)
    accuracy, ours, stderr = _predict(cnntool, saved["train"], images)
    assert (accuracy, ours) == (expected, predictions)
    assert f"architecture timm:{ARCH} from the training args in {saved['train']}" in stderr
    assert f"— from the training args in {saved['train']} (timm's train.py)" in stderr
    assert "warning" not in stderr, stderr


@pytest.mark.slow
def test_a_fine_tune_with_nothing_saved_about_its_feed_is_a_guess(fine_tuned, cnntool):
    model, saved, images = fine_tuned
    accuracy, _, stderr = _predict(cnntool, f"timm:{ARCH}", "--weights", saved["plain"], images)
    line = next(line for line in stderr.splitlines() if "preprocessing:" in line)
    assert line.startswith("warning: preprocessing: 3×160×160, resize 168 bicubic")
    assert f"a guess from timm's pretrained_cfg for {ARCH}" in line
    assert "ft.pth has 11 classes, not the 1000 of timm's pretrained weights" in line
    assert "— from timm's pretrained_cfg" not in line and "--input-size" in line
    # fed as it was trained, the same weights do better: the guess cost accuracy, silently before
    config = resolve_data_config(pretrained_cfg={**model.pretrained_cfg, **FEED})
    right, _ = _accuracy_with(model, create_transform(**config), images)
    assert right >= 0.8 and accuracy < right


def test_a_saved_config_cannot_make_timm_load_or_fetch_anything(tmp_path, no_network):
    import json

    from safetensors.torch import save_file

    reference = timm.create_model("test_efficientnet", pretrained=False, num_classes=2).eval()
    save_file(reference.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "architecture": "test_efficientnet",
                "num_classes": 2,
                # timm would torch.load this path (unsafely) or download the weights
                "model_args": {"checkpoint_path": str(tmp_path / "evil.pth"), "pretrained": True},
                "pretrained_cfg": {"input_size": [3, 32, 32], "hf_hub_id": "timm/nothing"},
            }
        )
    )
    loaded = load_model(str(tmp_path / "model.safetensors"), device="cpu")
    assert loaded.input_shape == (3, 32, 32) and not loaded.random_weights
    assert f"read {tmp_path / 'config.json'} beside model.safetensors" in loaded.notes
