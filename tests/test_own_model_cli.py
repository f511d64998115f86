"""A user's own CIFAR-style model through every command (#12), as a user runs them: the example's
SmallNet (examples/own_model) trained for seconds, saved as a state dict + JSON, a cnntool
checkpoint, safetensors and a Lightning checkpoint, fed its own 32-px images and statistics.

Each answer is checked against what the test computes itself with the same preprocessing:
accuracy by hand, FGSM against torchattacks, top-patch boxes against the receptive field."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import ROOT

EXAMPLE = ROOT / "examples" / "own_model"
ARCH = f"{EXAMPLE / 'model.py'}:small_net"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(own_model_trained):
    """The example script's output folder (conftest trains it once per run)."""
    return own_model_trained[0]


def _accuracy_by_hand(out: Path) -> float:
    """The checkpoint's model on the 32-px test PNGs, normalized here with numpy."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from model import MEAN, STD, small_net
    finally:
        sys.path.remove(str(EXAMPLE))
    model = small_net().eval()
    model.load_state_dict(torch.load(out / "small_net.pth", weights_only=True))
    folder = out / "data" / "test"
    correct = total = 0
    for label, name in enumerate(sorted(p.name for p in folder.iterdir())):
        files = sorted((folder / name).glob("*.png"))
        pixels = np.stack(
            [np.asarray(Image.open(f).convert("RGB"), np.float32) / 255 for f in files]
        )
        x = torch.from_numpy(((pixels - np.array(MEAN)) / np.array(STD)).astype(np.float32))
        with torch.no_grad():
            correct += int((model(x.permute(0, 3, 1, 2)).argmax(1) == label).sum())
        total += len(files)
    return correct / total


def _forms(out: Path) -> dict[str, list[str]]:
    """MODEL and its loading options for each way the training script saved the model."""
    return {
        "state dict + JSON": [
            out / "small_net.pth",
            "--arch",
            ARCH,
            "--trust-code",
            "--preprocessing",
            out / "preprocessing.json",
            "--classes",
            out / "classes.txt",
        ],
        "cnntool checkpoint": [out / "small_net_cnntool.pt", "--arch", ARCH, "--trust-code"],
        "safetensors": [out / "small_net.safetensors", "--arch", ARCH, "--trust-code"],
        "lightning": [
            out / "small_net_lightning.ckpt",
            "--arch",
            ARCH,
            "--trust-code",
            "--preprocessing",
            out / "preprocessing.json",
        ],
    }


def test_predict_equals_the_accuracy_computed_by_hand_for_every_saved_form(trained, cnntool):
    expected = _accuracy_by_hand(trained)
    assert expected > 0.3  # 8 classes: chance is 12.5%
    for form, model in _forms(trained).items():
        result = cnntool("predict", *model, trained / "data" / "test")
        assert result.returncode == 0, (form, result.stderr)
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        accuracy = sum(r["correct"] for r in rows) / len(rows)
        assert accuracy == pytest.approx(expected, abs=1e-9), form
        assert "preprocessing: 3×32×32, resize 32 bilinear" in result.stderr, form
        assert "warning" not in result.stderr, (form, result.stderr)


def test_a_state_dict_without_its_preprocessing_is_a_guess_and_says_so(trained, cnntool):
    result = cnntool(
        "predict",
        trained / "small_net.pth",
        "--arch",
        ARCH,
        "--trust-code",
        trained / "data" / "test",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    assert "warning: preprocessing: 3×224×224" in result.stderr
    assert "--input-size" in result.stderr and "--preprocessing" in result.stderr
    assert "enlarged 8.0×" in result.stderr  # 32-px images resized to 256 for a 224 crop


def test_input_size_alone_resizes_to_it(trained, cnntool):
    result = cnntool(
        "profile",
        trained / "small_net.pth",
        "--arch",
        ARCH,
        "--trust-code",
        "--input-size",
        "32",
        "--summary",
        "--format",
        "jsonl",
    )
    assert result.returncode == 0, result.stderr
    assert "input 3×32×32 — from the command line" in result.stderr
    total = json.loads(result.stdout)
    # conv 3→16 on 16×16, 16→32 on 8×8, 32→64 on 4×4 (3×3 kernels), linear 64→8
    assert total["macs"] == 16 * 16 * 16 * 27 + 8 * 8 * 32 * 144 + 4 * 4 * 64 * 288 + 64 * 8


def test_fgsm_is_bit_identical_to_torchattacks_on_the_normalized_model(trained):
    torchattacks = pytest.importorskip("torchattacks")
    import cnntool
    from cnntool.tasks.attack import PixelModel

    model = cnntool.load_model(
        str(trained / "small_net_cnntool.pt"), arch=ARCH, trust_code=True, device="cpu"
    )
    attacked, summaries = cnntool.attack_dataset(
        model, str(trained / "data" / "test"), "fgsm", eps=2 / 255, workers=0
    )
    clean = torch.stack([a.clean for a in attacked])
    labels = torch.tensor([a.label for a in attacked])
    # the same batches of 32 as the scan: a CPU convolution may pick another algorithm for another
    # batch size and round differently, and a gradient at rounding level then flips one pixel's
    # sign (seen on an AMD EPYC: 1 pixel of 614,400 against one batch of 200)
    fgsm = torchattacks.FGSM(PixelModel(model), eps=2 / 255)
    theirs = torch.cat(
        [fgsm(clean[i : i + 32], labels[i : i + 32]) for i in range(0, len(clean), 32)]
    )
    assert torch.equal(torch.stack([a.adversarial for a in attacked]), theirs)
    assert summaries[0].images == len(attacked) == 200
    assert summaries[0].adv_accuracy < summaries[0].clean_accuracy


def test_top_patch_boxes_are_receptive_fields_in_32_px_image_coordinates(
    trained, cnntool, tmp_path
):
    result = cnntool(
        "visualize",
        "top-patches",
        trained / "small_net_cnntool.pt",
        "--arch",
        ARCH,
        "--trust-code",
        trained / "data" / "test",
        "--layer",
        "features.1",
        "--units",
        "0-3",
        "--top",
        "4",
        "-o",
        tmp_path,
        "-q",
    )
    assert result.returncode == 0, result.stderr
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(hits) == 16
    for hit in hits:
        x0, y0, x1, y1 = hit["box"]
        row, col = hit["position"]
        # two 3×3 stride-2 convolutions with padding 1: unit j of the second sees the first's
        # units 2j-1..2j+1, which see pixels 4j-3..4j+3: a 7-px field with jump 4; the images
        # are fed at their own 32 px, so model-input pixels are image pixels
        assert (x1 - x0, y1 - y0) == (7, 7)
        assert (x0, y0) == (4 * col - 3, 4 * row - 3)
        assert 0 <= row < 8 and 0 <= col < 8
    grid = Image.open(tmp_path / "unit_0000.png")
    assert grid.width > 4 * 32 and np.asarray(grid).std() > 10


def test_deconv_features_embed_and_diagnose_run_on_its_own_images(trained, cnntool, tmp_path):
    model = _forms(trained)["lightning"]
    image = sorted((trained / "data" / "test").rglob("*.png"))[0]
    deconv = cnntool(
        "visualize",
        "deconv",
        *model,
        image,
        "--layer",
        "features.2",
        "-o",
        tmp_path / "deconv.png",
        "-q",
    )
    assert deconv.returncode == 0, deconv.stderr
    record = json.loads(deconv.stdout)
    assert record["target"]["layer"] == "features.2" and len(record["box"]) == 4
    assert Image.open(tmp_path / "deconv.png").height >= 96

    features = cnntool(
        "features", *model, trained / "data" / "test", "-o", tmp_path / "f.npz", "-q"
    )
    assert features.returncode == 0, features.stderr
    embed = cnntool(
        "embed",
        "--features",
        tmp_path / "f.npz",
        "--summary",
        tmp_path / "s.json",
        "--perplexity",
        "20",
        "-q",
    )
    assert embed.returncode == 0, embed.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["images"] == 200 and summary["dims"] == 64
    # the model's penultimate features separate its classes far better than chance (12.5%)
    assert summary["quality"]["knn_accuracy_features"] > 0.4

    diagnose = cnntool("diagnose", *model, trained / "data" / "test", "-q")
    assert diagnose.returncode == 0, diagnose.stderr
    layers = [json.loads(line) for line in diagnose.stdout.splitlines()]
    assert layers[-1]["layer"] is None and layers[-1]["images"] == 200
    assert {r["layer"] for r in layers[:-1]} >= {"features.0.0", "features.1.0", "features.2.0"}


def test_a_four_channel_model_is_fed_the_alpha_plane_through_every_step(cnntool, tmp_path):
    """RGBA PNGs reach a 4-channel model with their own alpha (predict), and so do the
    adversarial PNGs an attack saves and reads back (success_after_save)."""
    rng = np.random.default_rng(0)
    for name, alpha in (("opaque", 255), ("transparent", 0)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            rgba = rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)
            rgba[..., 3] = alpha
            Image.fromarray(rgba, "RGBA").save(tmp_path / "data" / name / f"{i}.png")
    model = [f"{ROOT / 'tests' / 'four_channel_model.py'}:alpha_net", "--trust-code"]
    predicted = cnntool("predict", *model, tmp_path / "data", "--workers", "0")
    assert predicted.returncode == 0, predicted.stderr
    assert "preprocessing: 4×16×16" in predicted.stderr
    assert [json.loads(line)["correct"] for line in predicted.stdout.splitlines()] == [True] * 6
    attacked = cnntool(
        "attack",
        "fgsm",
        *model,
        tmp_path / "data",
        "--eps",
        "0.6",
        "-o",
        tmp_path / "adv",
        "-q",
        "--workers",
        "0",
    )
    assert attacked.returncode == 0, attacked.stderr
    records = [json.loads(line) for line in attacked.stdout.splitlines()]
    # ε = 0.6 moves alpha 1 -> 0.4 and 0 -> 0.6: every image flips, and stays flipped as a PNG
    assert [r["success"] for r in records] == [True] * 6
    assert [r["success_after_save"] for r in records] == [True] * 6
    saved = Image.open(records[0]["file"])
    assert saved.mode == "RGBA" and np.asarray(saved)[..., 3].max() < 128
