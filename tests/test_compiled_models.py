"""TorchScript archives and torch.export programs as MODEL (#25): a hand-set model whose answers
are computed by hand (logits = the image's channel means), scripted and exported.

What needs only the forward pass gives the eager model's numbers on both; a command that looks
inside named layers works on an unflattened export and is one sentence on TorchScript."""

import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cnntool.cli.main import cli
from cnntool.core.loading.exported import NeedsPythonModule
from cnntool.core.loading.models import load_model
from cnntool.errors import ModelLoadError, shorten
from cnntool.tasks.activations import feature_maps
from cnntool.tasks.profile import profile
from tests.own_models import MeanColourNet

FOLDERS = ("a_red", "b_green", "c_blue")  # sorted: class 0 is red, 1 green, 2 blue
SIDE = 16


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Class folders of 16-px PNGs, mostly of their colour (some not: accuracy is not 1), and the
    eager model saved three ways."""
    root = tmp_path_factory.mktemp("compiled")
    rng = np.random.default_rng(25)
    for label, folder in enumerate(FOLDERS):
        (root / "data" / folder).mkdir(parents=True)
        for i in range(5):
            pixels = rng.integers(0, 120, (SIDE, SIDE, 3))
            pixels[..., label if i < 4 else (label + 1) % 3] += 120
            Image.fromarray(pixels.astype(np.uint8)).save(root / "data" / folder / f"{i}.png")
    eager = MeanColourNet(3).eval()
    example = torch.zeros(1, 3, SIDE, SIDE)
    with warnings.catch_warnings():  # torch.jit.script is deprecated, but users have archives
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(eager).save(str(root / "scripted.pt"))
    torch.export.save(torch.export.export(eager, (example,)), root / "static.pt2")
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(
        eager, (torch.zeros(2, 3, SIDE, SIDE),), dynamic_shapes={"x": {0: batch}}
    )
    torch.export.save(program, root / "dynamic.pt2")
    return root


def _by_hand(root) -> tuple[float, list[list[float]]]:
    """Accuracy and logits with numpy: the logits are the pixels' channel means."""
    correct, logits = 0, []
    for label, folder in enumerate(FOLDERS):
        for path in sorted((root / "data" / folder).glob("*.png")):
            means = (np.asarray(Image.open(path), np.float32) / 255).mean(axis=(0, 1))
            logits.append(means.tolist())
            correct += int(np.argmax(means) == label)
    return correct / len(logits), logits


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


FEED = ("--input-size", SIDE, "--resize", "none", "--mean", "0", "--std", "1")


@pytest.mark.parametrize("saved", ["scripted.pt", "static.pt2", "dynamic.pt2"])
def test_predict_equals_the_accuracy_computed_by_hand(files, saved):
    expected, logits = _by_hand(files)
    assert 0.5 < expected < 1
    result = _run("predict", files / saved, files / "data", *FEED, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sum(r["correct"] for r in rows) / len(rows) == pytest.approx(expected, abs=1e-12)
    top = [r["classes"][0]["prob"] for r in rows]
    softmax = [float(np.max(np.exp(row) / np.exp(row).sum())) for row in logits]
    assert top == pytest.approx(softmax, abs=1e-6)


def test_an_exported_program_fixes_its_input_size_and_its_batch(files):
    static = load_model(str(files / "static.pt2"))
    assert static.input_shape == (3, SIDE, SIDE)
    assert "from the exported program's input" in static.preprocessing_line()
    assert any("batches of exactly 1" in note and "--batch-size 1" in note for note in static.notes)
    dynamic = load_model(str(files / "dynamic.pt2"))
    assert not any("batches of exactly" in note for note in dynamic.notes)
    x = torch.rand(5, 3, SIDE, SIDE)
    expected = MeanColourNet(3).eval()(x)
    for loaded in (static, dynamic):  # static: five pieces of one
        with torch.no_grad():
            assert torch.allclose(loaded.module(x), expected, atol=1e-6)


def test_named_layers_of_an_exported_program_profile_and_show_their_maps(files):
    loaded = load_model(str(files / "dynamic.pt2"))
    rows = {row.name: row for row in profile(loaded.module, (3, SIDE, SIDE)).layers}
    # a 1×1 convolution 3→3 on 16×16 and a linear 3→3
    assert (rows["conv"].type, rows["conv"].macs) == ("Conv2d", SIDE * SIDE * 9)
    assert (rows["fc"].type, rows["fc"].macs) == ("Linear", 9)
    assert tuple(rows["conv"].receptive_field.size) == (1, 1)
    image = torch.rand(3, SIDE, SIDE)
    maps = feature_maps(loaded.module, image, "conv")
    assert torch.allclose(maps.maps, image, atol=1e-6)  # the identity convolution
    listed = _run("layers", files / "dynamic.pt2", "--format", "jsonl")
    aliases = {
        json.loads(line)["name"]: json.loads(line)["aliases"] for line in listed.stdout.splitlines()
    }
    assert aliases["fc"] == ["logits"] and aliases["pool"] == ["penultimate"]


def test_a_fixed_batch_program_hooked_at_another_batch_size_says_both_fixes(files):
    data = files / "data"
    result = _run("features", files / "static.pt2", data, *FEED, "-o", files / "f.npz")
    assert isinstance(result.exception, NeedsPythonModule)
    text = str(result.exception)
    assert "batches of exactly 1 and got 15" in text and "--batch-size 1" in text
    assert "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}" in text
    one = _run(
        "features", files / "static.pt2", data, *FEED, "-o", files / "f1.npz", "--batch-size", 1
    )
    assert one.exit_code == 0, one.output
    with np.load(files / "f1.npz") as saved:
        features = saved["features"]
    _, logits = _by_hand(files)
    assert np.allclose(features, logits, atol=1e-6)  # pool's output: the channel means


def test_an_exported_program_refuses_what_needs_module_types_or_python_calls(files):
    model = files / "dynamic.pt2"
    filters = _run("visualize", "filters", model, "-o", files / "filters")
    assert isinstance(filters.exception, NeedsPythonModule)
    assert "graph pieces" in str(filters.exception)
    guided = _run(
        "visualize",
        "deconv",
        model,
        files / "data" / "a_red" / "0.png",
        *FEED,
        "-o",
        files / "g.png",
    )
    assert isinstance(guided.exception, NeedsPythonModule)
    assert "calls aten operators" in str(guided.exception) and "saliency or ig" in str(
        guided.exception
    )


# What works on a TorchScript archive (the forward pass, input gradients), and what is one
# sentence: each command class.
WORKS = {
    "attack": ["attack", "fgsm", "{m}", "{data}", "--eps", "4/255", "-o", "{out}"],
    "saliency": [
        "visualize",
        "deconv",
        "{m}",
        "{image}",
        "--method",
        "saliency",
        "-o",
        "{out}.png",
    ],
    "occlusion": [
        "visualize",
        "occlusion",
        "{m}",
        "{image}",
        "--size",
        "4",
        "--stride",
        "4",
        "-o",
        "{out}",
    ],
    "maximize": ["visualize", "maximize", "{m}", "--class", "0", "--steps", "4", "-o", "{out}.png"],
    "profile": ["profile", "{m}", "--format", "jsonl"],
}
NEEDS_LAYERS = {
    "activations": ["visualize", "activations", "{m}", "{image}", "--layer", "conv", "-o", "{out}"],
    "filters": ["visualize", "filters", "{m}", "-o", "{out}"],
    "top-patches": ["visualize", "top-patches", "{m}", "{data}", "--layer", "conv", "-o", "{out}"],
    "cam": ["visualize", "cam", "{m}", "{data}", "-o", "{out}"],
    "features": ["features", "{m}", "{data}", "-o", "{out}.npz"],
    "diagnose": ["diagnose", "{m}", "{data}"],
    "microscope": ["microscope", "{m}", "{data}", "-o", "{out}"],
    "gradcheck": ["gradcheck", "{m}"],
    "guided": ["visualize", "deconv", "{m}", "{image}", "-o", "{out}.png"],
}


def _command(files, template, name):
    values = {
        "m": files / "scripted.pt",
        "data": files / "data",
        "image": files / "data" / "a_red" / "0.png",
        "out": files / f"out-{name}",
    }
    return [part.format(**values) for part in template] + list(map(str, FEED))


@pytest.mark.parametrize("name", sorted(WORKS))
def test_torchscript_runs_what_needs_only_the_forward_pass(files, name):
    result = _run(*_command(files, WORKS[name], name))
    assert result.exit_code == 0, (result.output, result.exception)


def test_torchscript_profile_counts_its_work_at_the_root_and_says_why(files):
    result = _run("profile", files / "scripted.pt", "--format", "jsonl", *FEED)
    rows = {json.loads(line)["name"]: json.loads(line) for line in result.stdout.splitlines()}
    assert rows[""]["macs"] == rows["total"]["macs"] == SIDE * SIDE * 9 + 9
    assert rows["conv"]["params"] == 9 and rows["conv"]["macs"] == 0
    assert "all its work is counted in its root row" in result.stderr
    assert "per-layer counts need the Python module" in result.stderr


@pytest.mark.parametrize("name", sorted(NEEDS_LAYERS))
def test_torchscript_layer_commands_are_one_sentence_naming_the_fix(files, name):
    result = _run(*_command(files, NEEDS_LAYERS[name], name))
    assert isinstance(result.exception, NeedsPythonModule), (result.output, result.exception)
    text = str(result.exception)
    assert "\n" not in text and len(text) < 420
    assert "give the Python module instead" in text
    if name != "guided":
        assert "predict, attack" in text  # what does work on it


def test_the_sentence_reaches_stderr_whole_with_exit_code_1(files, cnntool):
    result = cnntool(
        "visualize",
        "activations",
        files / "scripted.pt",
        files / "data" / "a_red" / "0.png",
        "--layer",
        "conv",
        *FEED,
        "-o",
        files / "act",
    )
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.endswith("or a torch.export .pt2") and "RuntimeError" not in result.stderr


def test_long_messages_are_cut_after_a_whole_word():
    text = "cannot load " + "word " * 60
    cut = shorten(text, 50)
    assert cut == "cannot load word word word word word word word …"
    assert shorten("short", 50) == "short"


def test_a_damaged_exported_program_is_one_sentence(files, tmp_path):
    damaged = tmp_path / "damaged.pt2"
    data = (files / "static.pt2").read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(damaged))
    assert str(caught.value).startswith(f"cannot read {damaged}")
