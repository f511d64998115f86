"""The command line as a user and a shell pipeline see it: stdout, stderr, exit codes.

How fast `--help` answers is measured by benchmarks/cli_startup_bench.py, not asserted here."""

import json

import pytest
from PIL import Image


def test_help_has_an_example_everywhere_and_does_not_import_torch(cnntool):
    """Every command and every subcommand of a group (attack, visualize) answers --help with a
    runnable example, without importing torch."""
    code = (
        "import sys, click\nfrom click.testing import CliRunner\nfrom cnntool.cli.main import cli\n"
        "def walk(group, path):\n"
        "    for name in group.list_commands(None):\n"
        "        command = group.get_command(None, name)\n"
        "        yield path + [name]\n"
        "        if isinstance(command, click.Group):\n"
        "            yield from walk(command, path + [name])\n"
        "paths = [[]] + list(walk(cli, []))\n"
        "assert len(paths) > 15, paths\n"
        "for path in paths:\n"
        "    result = CliRunner().invoke(cli, path + ['--help'])\n"
        "    assert result.exit_code == 0, (path, result.output)\n"
        "    assert 'Example' in result.output, path\n"
        "assert 'torch' not in sys.modules, 'help imported torch'\n"
    )
    result = cnntool.python(code)  # a fresh interpreter: which modules --help imports
    assert result.returncode == 0, result.stderr
    top = cnntool("--help")
    assert top.returncode == 0 and "Example" in top.stdout and top.stderr == ""


def test_predict_lite0_on_imagenet_samples_jsonl(cnntool):
    result = cnntool("predict", "efficientnet_lite0", "imagenet-samples", "--top", "3")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 20
    assert all(
        len(r["classes"]) == 3 and r["classes"][0]["prob"] >= r["classes"][1]["prob"]
        for r in records
    )
    assert sum(r["correct"] for r in records) >= 16
    assert "top-1 accuracy" in result.stderr


def test_predict_reads_paths_from_stdin_and_skips_bad_files(tmp_path, cnntool):
    Image.new("L", (28, 28), 0).save(tmp_path / "blank.png")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    paths = f"{tmp_path / 'blank.png'}\n{tmp_path / 'bad.png'}\n"
    result = cnntool("predict", "lenet5-mnist", "-", "--format", "csv", "-q", stdin=paths)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("path,label,top1") and len(lines) == 2
    assert "skipped 1 unreadable image" in result.stderr


def test_predict_with_only_bad_files_fails_with_one_sentence(tmp_path, cnntool):
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    result = cnntool("predict", "lenet5-mnist", str(tmp_path))
    assert result.returncode == 1
    assert "could be read" in result.stderr and "Traceback" not in result.stderr


def test_user_errors_exit_1_without_traceback_and_debug_shows_it(tmp_path, cnntool):
    result = cnntool("layers", "alexnett")
    assert result.returncode == 1
    assert "did you mean 'alexnet'" in result.stderr and "Traceback" not in result.stderr
    debug = cnntool("layers", "alexnett", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_usage_errors_exit_2(cnntool):
    assert cnntool("predict").returncode == 2
    unknown = cnntool("profil", "alexnet")
    assert unknown.returncode == 2 and "profile" in unknown.stderr


def test_layers_lists_aliases(cnntool):
    result = cnntool("layers", "alexnet", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    records = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["features.10"]["aliases"] == ["conv5"]
    assert records["features.12"]["output_shape"] == [1, 256, 6, 6]
    assert "fc7" in records["classifier.4"]["aliases"]
    assert records["classifier.1"]["params"] == 9216 * 4096 + 4096


def test_models_lists_builtins_first(cnntool):
    result = cnntool("models", "--format", "jsonl")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    names = [record["name"] for record in records]
    assert names[:5] == [
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "lenet5-mnist",
        "lenet5-mnist-adv",
    ]
    kinds = [record["kind"] for record in records]
    assert kinds == sorted(kinds, key=lambda kind: kind != "built-in")  # every built-in first
    assert "resnet50" in names and "vit_b_16" in names


def test_layers_lists_containers_with_their_children_params(cnntool):
    result = cnntool("layers", "resnet18", "--format", "jsonl")
    records = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert records["layer4"]["type"] == "Sequential" and records["layer4"]["output_shape"] == [
        1,
        512,
        7,
        7,
    ]
    assert records["layer4"]["params"] == sum(
        r["params"]
        for name, r in records.items()
        if name.startswith("layer4.") and name.count(".") == 1
    )
    assert records["avgpool"]["aliases"] == ["penultimate"] and records["fc"]["aliases"] == [
        "logits"
    ]


@pytest.mark.slow
def test_profile_jsonl_csv_and_too_small_input(cnntool):
    result = cnntool("profile", "alexnet", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    total = records[-1]
    assert total["name"] == "total" and total["params"] == 61_100_840
    assert round(total["macs"] / 1e9, 3) == 0.714 and total["flops"] > 2 * total["macs"]
    pool5 = next(r for r in records if r["name"] == "features.12")
    assert pool5["receptive_field"]["size"] == [195, 195] and pool5["receptive_field"]["jump"] == [
        32,
        32,
    ]
    assert "meta device" in result.stderr and "2 per MAC" in result.stderr

    csv_out = cnntool(
        "profile", "lenet5-mnist", "--format", "csv", "--batch", "4"
    ).stdout.splitlines()
    assert csv_out[0].startswith("name,type,output_shape,params,macs,flops")
    assert csv_out[-1].startswith("total,LeNet5,4x10,")

    small = cnntool("profile", "alexnet", "--input-size", "16")
    assert small.returncode == 1 and "too small" in small.stderr and "Traceback" not in small.stderr


@pytest.mark.slow
def test_random_weights_are_said_where_they_matter(tmp_path, cnntool):
    """torchvision architectures load without trained weights: predict says so, profile (which
    only counts) does not, and a built-in trained model never does."""
    from cnntool.core.samples import photos

    random = cnntool("predict", "resnet18", photos()[0], "-q")
    assert random.returncode == 0 and "resnet18 has random weights" in random.stderr
    counted = cnntool("profile", "resnet18", "-q")
    assert counted.returncode == 0 and "random weights" not in counted.stderr
    trained = cnntool("predict", "efficientnet_lite0", photos()[0], "-q")
    assert trained.returncode == 0 and "random weights" not in trained.stderr
