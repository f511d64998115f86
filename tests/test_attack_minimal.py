"""Minimal-perturbation attacks, CW and DeepFool: equal to torchattacks and foolbox (to the bit
where the arithmetic is the same, within a stated rounding where it is not), hand-set models
whose answer is computed here, the norm histogram by its pixels, and the command line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnntool.core.data import BatchStream, open_data
from cnntool.core.loading.models import load_model
from cnntool.errors import CnnToolError
from cnntool.tasks.attack import PixelModel, cw, deepfool
from cnntool.tasks.attack.cw import margin_loss
from cnntool.tasks.attack.minimal import ImageNorms, PerturbationNorms, minimal_attack
from tests.pixels import colour_mask, find_plot_text, png

torchattacks = pytest.importorskip("torchattacks")
foolbox = pytest.importorskip("foolbox")

DIGITS = [0, 1250, 2500, 3750]  # four digits of mnist-5k (0, 2, 5, 7)


@pytest.fixture(scope="module")
def lenet():
    return load_model("lenet5-mnist", device="cpu")


@pytest.fixture(scope="module")
def digits(lenet):
    dataset = open_data("mnist-5k")
    stream = BatchStream(
        dataset, lenet.preprocessing, batch_size=len(DIGITS), normalize=False, indices=DIGITS
    )
    batch = next(iter(stream))
    return batch.inputs, torch.tensor([dataset.labels[i] for i in batch.indices])


class Shifted(nn.Module):
    """A model's logits plus a constant: the same classifier (softmax, argmax and every logit
    difference unchanged), with every logit positive, where torchattacks' CW loss is f6."""

    def __init__(self, inner: nn.Module, shift: float):
        super().__init__()
        self.inner, self.shift = inner, shift

    def forward(self, pixels):
        return self.inner(pixels) + self.shift


class Columns(nn.Module):
    """Some of a model's logits, in the order given (DeepFool's candidate classes)."""

    def __init__(self, inner: nn.Module, columns: torch.Tensor):
        super().__init__()
        self.inner, self.columns = inner, columns

    def forward(self, pixels):
        return self.inner(pixels)[:, self.columns]


def l2(adversarial, images):
    return (adversarial - images).flatten(1).norm(dim=1)


# --- Carlini–Wagner ------------------------------------------------------------------------


def test_cw_equals_torchattacks_bit_for_bit_where_logits_are_positive(lenet, digits):
    images, labels = digits
    model = Shifted(PixelModel(lenet), 100.0).eval()
    with torch.no_grad():
        assert model(images).min() > 50  # torchattacks' max((1 - onehot)·Z) is f6's max here
    ours = cw(model, images, labels, c=10, kappa=0, steps=20, lr=0.1)
    theirs = torchattacks.CW(model, c=10, kappa=0, steps=20, lr=0.1)(images, labels)
    assert torch.equal(ours, theirs)
    with torch.no_grad():
        assert (model(ours).argmax(dim=1) != labels).all()  # every digit fooled
    assert (l2(ours, images) > 0.5).all() and (l2(ours, images) < 5).all()
    # one step only evaluates the clean digits (the first iterate): none fooled, and CW gives
    # back each clean image untouched, not the iterate
    assert torch.equal(cw(model, images, labels, c=10, steps=1, lr=0.1), images)

    targets = torch.full_like(labels, 3)
    ours = cw(model, images, targets, c=10, steps=10, lr=0.1, kappa=2, targeted=True)
    attack = torchattacks.CW(model, c=10, kappa=2, steps=10, lr=0.1)
    attack.set_mode_targeted_by_label(quiet=True)
    assert torch.equal(ours, attack(images, targets))


def test_cw_uses_carlinis_f6_where_torchattacks_stalls_on_negative_logits():
    # two pixels (0.6, 0.4), logits −10 ± (a − b): class 0 wins by 0.4, every logit negative
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        model.bias.fill_(-10.0)
    pixels = nn.Sequential(nn.Flatten(), model).eval()
    image, label = torch.tensor([[[[0.6, 0.4]]]]), torch.tensor([0])
    logits = pixels(image).detach()
    # f6 = max(Z_y − max_{i≠y} Z_i, −κ) = 0.4; torchattacks' loss is 0 (it maxes with the zeros
    # of its one-hot mask), so it has no gradient and returns the clean image
    assert margin_loss(logits, label, kappa=0.0, targeted=False).item() == pytest.approx(0.4)
    assert torchattacks.CW(pixels).f(logits, label).item() == 0
    assert torch.equal(torchattacks.CW(pixels, c=1, steps=50, lr=0.1)(image, label), image)
    lr = 0.05
    adversarial = cw(pixels, image, label, c=1, steps=50, lr=lr)
    delta = (adversarial - image).flatten()
    assert pixels(adversarial).argmax().item() == 1
    # the boundary's nearest point is (0.5, 0.5): δ = (−0.1, +0.1), L2 = 0.1414. The successful
    # iterate is past it by less than one Adam step, ≤ lr in w and so ≤ lr/2 in each pixel
    assert 0.1414 < delta.norm().item() < 0.1414 + 2**0.5 * lr / 2
    assert delta[0].item() == pytest.approx(-delta[1].item(), abs=1e-6)  # the symmetric path


def test_minimal_attack_settings_are_checked():
    attack = minimal_attack("cw", c=5.0)
    assert attack.func is cw and attack.keywords == {
        "c": 5.0,
        "kappa": 0.0,
        "steps": 50,
        "lr": 0.01,
    }
    assert minimal_attack("deepfool").keywords["variant"] == "paper"
    for method, settings, message in [
        ("fab", {}, "unknown attack 'fab'"),
        ("cw", {"overshoot": 0.1}, "cw takes no overshoot"),
        ("cw", {"c": -1.0}, "c -1 must be a number ≥ 0"),
        ("cw", {"lr": 0.0}, "learning rate 0 must be a number > 0"),
        ("deepfool", {"candidates": 1}, "candidates must be at least 2"),
        ("deepfool", {"variant": "ours"}, "unknown deepfool variant 'ours'"),
    ]:
        with pytest.raises(CnnToolError, match=message):
            minimal_attack(method, **settings)
    with pytest.raises(CnnToolError, match="takes no ε"):
        cw(nn.Flatten(), torch.zeros(1, 1, 1, 2), torch.tensor([0]), 0.1)
    with pytest.raises(CnnToolError, match="untargeted"):
        deepfool(nn.Flatten(), torch.zeros(1, 1, 1, 2), torch.tensor([0]), targeted=True)


# --- DeepFool ------------------------------------------------------------------------------


def test_deepfool_torchattacks_variant_is_torchattacks_image_by_image(lenet, digits):
    images, labels = digits
    images, labels = images[:2], labels[:2]
    settings = dict(steps=3, overshoot=0.02)
    theirs = torchattacks.DeepFool(PixelModel(lenet), **settings)
    for i in range(2):  # torchattacks attacks one image at a time: so do we, to the bit
        one = slice(i, i + 1)
        ours = deepfool(lenet, images[one], labels[one], variant="torchattacks", **settings)
        assert torch.equal(ours, theirs(images[one], labels[one]))
    # a batch goes through the model at once, and LeNet's convolutions round differently for 2
    # images than for 1 (its logits move by ~2e-6): the same steps within 1e-5
    batched = deepfool(lenet, images, labels, variant="torchattacks", **settings)
    alone = theirs(images, labels)
    assert (batched - alone).abs().max() < 1e-5
    assert (batched - images).abs().amax(dim=(1, 2, 3)).min() > 0.1  # every digit moved


def test_deepfool_candidates_are_the_top_classes_of_the_clean_image(lenet, digits):
    images, labels = digits
    image, label = images[1:2], labels[1:2]
    with torch.no_grad():
        top3 = PixelModel(lenet)(image).topk(3, dim=1).indices[0]
    assert top3[0] == label[0]
    ours = deepfool(lenet, image, label, candidates=3, variant="torchattacks", steps=4)
    # torchattacks on the model cut down to those three classes, the label first
    sliced = Columns(PixelModel(lenet), top3).eval()
    theirs = torchattacks.DeepFool(sliced, steps=4)(image, torch.tensor([0]))
    assert torch.equal(ours, theirs)
    with torch.no_grad():  # it went toward the candidates: its two best classes are two of them
        assert set(PixelModel(lenet)(ours).topk(2).indices[0].tolist()) < set(top3.tolist())


def test_deepfool_equals_foolbox_l2_deepfool(lenet, digits):
    images, labels = digits
    images, labels = images[:2], labels[:2]
    ours = deepfool(lenet, images, labels)  # the paper's variant, every class, 50 steps at most
    model = foolbox.PyTorchModel(PixelModel(lenet), bounds=(0, 1))
    attack = foolbox.attacks.L2DeepFoolAttack(steps=50, candidates=None, overshoot=0.02)
    _, theirs, _ = attack(model, images, labels, epsilons=None)
    # foolbox differentiates f_k − f_y where we difference ∇f_k and ∇f_y, and adds 1e-8 to the
    # norms: a float32 rounding apart
    assert (ours - theirs).abs().max() < 1e-6
    with torch.no_grad():
        assert (PixelModel(lenet)(ours).argmax(dim=1) != labels).all()
    assert l2(ours, images).tolist() == pytest.approx(l2(theirs, images).tolist(), abs=1e-5)
    assert 0.5 < l2(ours, images).median() < 3


def test_deepfool_on_an_affine_model_crosses_the_boundary_in_one_step():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, 12)).astype(np.float32) * 0.5
    bias = np.array([1.0, 0.8, 0.3], np.float32)
    x = np.full(12, 0.5, np.float32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(weight))
        model[1].bias.copy_(torch.from_numpy(bias))
    logits = weight @ x + bias
    y = int(logits.argmax())
    # the nearest of the two linear boundaries, by hand
    others = [k for k in range(3) if k != y]
    distance = {
        k: abs(logits[k] - logits[y]) / np.linalg.norm(weight[k] - weight[y]) for k in others
    }
    nearest = min(distance, key=distance.get)
    w = weight[nearest] - weight[y]
    image, label = torch.from_numpy(x).view(1, 3, 2, 2), torch.tensor([y])
    for variant, step in [
        ("paper", (distance[nearest] + 1e-4) * w / np.linalg.norm(w)),
        ("torchattacks", distance[nearest] * w / np.linalg.norm(w)),
    ]:
        adversarial = deepfool(model, image, label, variant=variant).flatten().numpy()
        expected = np.clip(x + 1.02 * step, 0, 1)
        assert expected.min() > 0 and expected.max() < 1  # no clamping in this example
        np.testing.assert_allclose(adversarial, expected, atol=1e-6)  # one step, then fooled
        after = weight @ adversarial + bias
        assert after[nearest] > after[y]


def test_deepfool_leaves_an_image_where_the_model_is_flat():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    image = torch.full((1, 1, 2, 2), 0.5)
    for variant in ("paper", "torchattacks"):  # no gradient, no boundary: no NaN, no step
        assert torch.equal(deepfool(model, image, torch.tensor([0]), variant=variant), image)


# --- norms, histogram -----------------------------------------------------------------------


def test_perturbation_norms_count_successes_failures_and_the_already_fooled():
    images = [
        ImageNorms(True, True, 1.0, 0.1),
        ImageNorms(True, True, 3.0, 0.3),
        ImageNorms(True, False, 0.0, 0.0),
        ImageNorms(False, True, 0.0, 0.0),  # already misclassified: no perturbation
        ImageNorms(True, True, 2.0, 0.2),
    ]
    norms = PerturbationNorms.of(images)
    assert (norms.l2, norms.failures, norms.already) == ([1.0, 3.0, 2.0], 1, 1)
    assert norms.summary() == {
        "l2_median": 2.0, "l2_mean": 2.0, "l2_min": 1.0, "l2_max": 3.0,
        "linf_median": 0.2, "linf_mean": 0.2, "linf_min": 0.1, "linf_max": 0.3,
    }  # fmt: skip
    assert PerturbationNorms.of([ImageNorms(True, False, 0, 0)]).summary() is None


def test_norm_histogram_bars_have_the_counts_and_the_title_counts_failures(tmp_path):
    from cnntool.io.minimal_report import BAR, save_norm_histogram

    values = [0.5, 1.1, 1.2, 1.3, 1.35, 1.9, 2.0, 2.05, 2.1, 2.15, 2.2, 3.0]
    counts, edges = save_norm_histogram(
        tmp_path / "norms.png", values, title="CW on lenet5-mnist, digits", failures=3
    )
    assert counts.sum() == 12 and edges[0] == 0 and edges[-1] == 3.0
    assert counts.tolist() == np.histogram(values, bins=edges)[0].tolist()
    pixels = png(tmp_path / "norms.png")
    assert find_plot_text(pixels, "12 successful (3 failed)", fontsize=9)
    assert find_plot_text(pixels, "CW on lenet5-mnist, digits", fontsize=11)
    assert find_plot_text(pixels, "median 1.95", fontsize=9)
    # each bar's height in pixels is proportional to its count
    bars = colour_mask(pixels, tuple(int(BAR[i : i + 2], 16) for i in (1, 3, 5)))
    columns = bars.sum(axis=0)
    drawn = np.flatnonzero(columns)  # from the first non-empty bin's left edge to the last's right
    first, last = np.flatnonzero(counts)[[0, -1]]
    unit = (drawn[-1] + 1 - drawn[0]) / (edges[last + 1] - edges[first])
    tallest = counts.max()
    for count, low, high in zip(counts, edges[:-1], edges[1:], strict=True):
        height = columns[int(drawn[0] + unit * ((low + high) / 2 - edges[first]))]
        if count == 0:
            assert height == 0
        else:
            assert height / columns.max() == pytest.approx(count / tallest, abs=0.02)
    save_norm_histogram(tmp_path / "none.png", [], title="CW", failures=4)
    assert find_plot_text(png(tmp_path / "none.png"), "no successful perturbation")


def test_norm_histogram_title_is_one_line_and_the_settings_one_more(tmp_path):
    """Above the axes: the title on one line and, on one more, the counts and the settings
    (README's CW example); settings that do not fit there go under the axis title; a title
    too long for the figure is cut in the middle (the path keeps its end), never wrapped. The
    same one-line title on attack auto's bars."""
    from cnntool.io.auto_report import save_robustness_bars
    from cnntool.io.minimal_report import save_norm_histogram
    from tests.pixels import axes_frame, runs

    def lines_above_axes(pixels):
        _, top, _, _ = axes_frame(pixels)
        return runs((pixels[: top - 2].max(axis=-1) < 128).any(axis=1))

    def edge_ink(pixels):  # text that ran off the figure would touch its left or right edge
        return bool((pixels[:, [0, 1, -2, -1]].max(axis=-1) < 200).any())

    values = [0.5, 1.1, 1.2, 1.3, 2.0, 2.1, 3.0]
    save_norm_histogram(
        tmp_path / "cw.png", values, title="CW on lenet5-mnist, mnist-5k",
        settings="c = 10, κ = 0, 100 steps, lr 0.1", failures=1,
    )  # fmt: skip
    pixels = png(tmp_path / "cw.png")
    assert len(lines_above_axes(pixels)) == 2 and not edge_ink(pixels)
    assert find_plot_text(pixels, "CW on lenet5-mnist, mnist-5k", fontsize=11)
    subtitle = "7 successful (1 failed) · c = 10, κ = 0, 100 steps, lr 0.1"
    assert find_plot_text(pixels, subtitle, fontsize=9)
    long_path = "/home/someone/datasets/imagenet/validation/selected_photos_for_the_report"
    save_norm_histogram(
        tmp_path / "long.png", values, title=f"CW on efficientnet_lite0, {long_path}",
        settings="c = 10, κ = 5, 1000 steps, lr 0.01", failures=12, already=2,
    )  # fmt: skip
    pixels = png(tmp_path / "long.png")
    assert len(lines_above_axes(pixels)) == 2 and not edge_ink(pixels)
    assert find_plot_text(pixels, "CW on efficientnet_lite0, /home", fontsize=11)
    assert find_plot_text(pixels, "…", fontsize=11)
    assert find_plot_text(pixels, "selected_photos_for_the_report", fontsize=11)
    assert find_plot_text(pixels, "7 successful (12 failed, 2 needed no perturbation)", 9)
    _, _, _, bottom = axes_frame(pixels)
    below = pixels[bottom + 20 :]
    assert find_plot_text(below, "settings: c = 10, κ = 5, 1000 steps, lr 0.01", fontsize=10)
    bars = [("clean (no attack)", 1.0), ("APGD-CE", 0.5), ("worst case", 0.4)]
    title = f"efficientnet_lite0 on {long_path} (60 images), L∞ ε = 8/255"
    save_robustness_bars(tmp_path / "bars.png", bars, title=title, note="a note")
    pixels = png(tmp_path / "bars.png")
    assert len(lines_above_axes(pixels)) == 1 and not edge_ink(pixels)
    assert find_plot_text(pixels, "(60 images), L∞ ε = 8/255", fontsize=11)


# --- the command line ------------------------------------------------------------------------


def digit_folder(tmp_path, indices):
    dataset = open_data("mnist-5k")
    for i in indices:
        folder = tmp_path / "digits" / str(dataset.labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(dataset.arrays[i]).save(folder / f"{i}.png")
    return tmp_path / "digits"


def records(result):
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_cli_deepfool_records_histogram_and_triptych(tmp_path, lenet, cnntool):
    data = digit_folder(tmp_path, [0, 2500, 4999])
    out = tmp_path / "out"
    result = cnntool(
        "attack", "deepfool", "lenet5-mnist", data, "--candidates", "3", "-o", out,
        "--triptychs", "1", cwd=tmp_path,
    )  # fmt: skip
    rows = records(result)
    assert len(rows) == 3 and all("eps" not in r for r in rows)
    assert all(r["success"] and r["label_source"] == "dataset" for r in rows)
    for row in rows:  # the record's norms are those of the saved file's perturbation, ±½/255
        saved = np.asarray(Image.open(row["file"]), dtype=np.float32) / 255
        clean = np.asarray(Image.open(row["path"]), dtype=np.float32) / 255
        assert np.abs(saved - clean).max() == pytest.approx(row["linf"], abs=0.5 / 255 + 1e-6)
        assert 0.3 < row["l2"] < 4
    assert "L2 of the 3 successful perturbations: median" in result.stderr
    median = np.median([r["l2"] for r in rows])
    assert f"median {median:.4g}" in result.stderr
    pixels = png(out / "norms.png")
    assert find_plot_text(pixels, "3 successful (0 failed)", fontsize=9)
    assert find_plot_text(pixels, f"median {median:.3g}", fontsize=9)
    (triptych,) = (out / "triptych").glob("*.png")  # the perturbation ×1/(2·L∞), its L2
    linf, norm = rows[0]["linf"], rows[0]["l2"]
    pixels = png(triptych)
    assert find_plot_text(pixels, f"perturbation ×{1 / (2 * linf):.3g}, L2 = {norm:.3g}")
    assert find_plot_text(pixels, f"−{linf:.3g} black · 0 grey · +{linf:.3g} white")


def test_cli_cw_targeted_and_bad_input(tmp_path, cnntool):
    data = digit_folder(tmp_path, [0, 2500])
    result = cnntool(
        "attack", "cw", "lenet5-mnist", data, "--target", "3", "--c", "10", "--lr", "0.1",
        "--steps", "30", "--format", "csv",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.startswith("path,label,label_source,target,") and "eps" not in header
    rows = [dict(zip(header.split(","), line.split(","), strict=True)) for line in lines]
    assert [r["target"] for r in rows] == ["3", "3"]
    assert any(r["success"] == "True" and r["adv_pred"] == "3" for r in rows)
    assert "cw (L2; c = 10, κ = 0, 30 steps, lr 0.1)" in result.stderr
    for args, message in [
        (["cw", "--c", "-1"], "-1.0 is not in the range x>=0"),
        (["cw", "--triptychs", "2"], "--triptychs needs -o DIR"),
        (["deepfool", "--target", "3"], "No such option '--target'"),
    ]:
        result = cnntool("attack", args[0], "lenet5-mnist", data, *args[1:])
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.torchrun
def test_torchrun_deepfool_writes_what_one_process_writes(tmp_path, cnntool):
    data = digit_folder(tmp_path, [0, 1250, 2500, 3750, 4999])
    # batches of one image: the same arithmetic whatever the shard, so the same bits
    args = ["attack", "deepfool", "lenet5-mnist", data, "--candidates", "3", "--batch-size", "1"]
    args += ["--workers", "0", "--triptychs", "2", "-q"]
    one = cnntool(*args, "-o", tmp_path / "one", threads=1)
    two = cnntool.torchrun(*args, "-o", tmp_path / "two")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    single, double = records(one), records(two)
    for record in single + double:
        record["file"] = record["file"].rsplit("/", 1)[-1]
    assert double == single and len(single) == 5
    # the histogram gathers every rank's norms: the same figure
    assert np.array_equal(png(tmp_path / "one" / "norms.png"), png(tmp_path / "two" / "norms.png"))
    assert len(list((tmp_path / "two" / "triptych").iterdir())) == 2


# --- EfficientNet-Lite0 (ImageNet) ------------------------------------------------------------


@pytest.fixture(scope="module")
def lite0_pair():
    model = load_model("efficientnet_lite0", device="cpu")
    dataset = open_data("imagenet-samples")
    stream = BatchStream(dataset, model.preprocessing, batch_size=2, normalize=False)
    batch = next(iter(stream))
    return model, batch.inputs, torch.tensor([dataset.labels[i] for i in batch.indices])


@pytest.mark.slow
def test_cw_and_deepfool_on_lite0_equal_torchattacks_and_foolbox(lite0_pair):
    model, images, labels = lite0_pair
    pixel_model = PixelModel(model)
    shifted = Shifted(pixel_model, 50.0).eval()
    ours = cw(shifted, images, labels, c=1, steps=5, lr=0.01)
    assert torch.equal(ours, torchattacks.CW(shifted, c=1, steps=5, lr=0.01)(images, labels))
    with torch.no_grad():
        assert (shifted(ours).argmax(dim=1) != labels).all()

    # DeepFool over 1000 classes takes 1000 backward passes a step: 3 candidate classes here,
    # and torchattacks on the model cut down to them (each image its own three)
    with torch.no_grad():
        top3 = pixel_model(images).topk(3, dim=1).indices
    assert torch.equal(top3[:, 0], labels)
    ours = deepfool(model, images, labels, candidates=3, variant="torchattacks", steps=2)
    for i in range(len(images)):
        sliced = Columns(pixel_model, top3[i]).eval()
        theirs = torchattacks.DeepFool(sliced, steps=2)(images[i : i + 1], torch.tensor([0]))
        # a batch of 2 against torchattacks' 1, and one thread under xdist against several:
        # lite0's convolutions round differently, and DeepFool's step divides by a difference
        # of gradients (3.7e-5 seen with one thread per worker)
        assert (ours[i : i + 1] - theirs).abs().max() < 1e-4
    ours = deepfool(model, images, labels, candidates=3, steps=2)
    fmodel = foolbox.PyTorchModel(pixel_model, bounds=(0, 1))
    _, theirs, _ = foolbox.attacks.L2DeepFoolAttack(steps=2, candidates=3)(
        fmodel, images, labels, epsilons=None
    )
    assert (ours - theirs).abs().max() < 1e-4  # the rounding above
    with torch.no_grad():  # two steps fool the first photo already, with a small L2
        fooled = pixel_model(ours).argmax(dim=1) != labels
    assert fooled[0] and 0 < l2(ours, images)[0] < 1.0
