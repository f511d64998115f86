"""The command line's shared options as values (loading.model_request, option_values): parsing them,
and spelling a request back as flags that parse to the same request."""

from dataclasses import asdict

import click
import pytest
from click.testing import CliRunner

from cnntool.core.loading.model_request import ModelRequest
from cnntool.core.option_values import (
    parse_floats,
    parse_names,
    parse_position,
    parse_resize,
    parse_size,
)
from cnntool.core.session import ScanReport, report_warnings


def test_option_values_parse_to_numbers():
    assert parse_size("32") == (None, 32, 32) and parse_size("3x224x224") == (3, 224, 224)
    assert parse_size("28×28", channels_default=1) == (1, 28, 28)
    assert parse_floats("0.5, 0.25,") == (0.5, 0.25) and parse_resize("none") == "none"
    assert parse_resize("256") == 256 and parse_position("3x5") == (3, 5)
    assert parse_names(" conv1, layer2.0,,fc ") == ["conv1", "layer2.0", "fc"]
    assert parse_names(" , ") is None and parse_names(None) is None  # no name: the default layers
    for parse, text, says in [
        (parse_size, "0,32", "below 1 pixel"),
        (parse_size, "1x2x3x4", "not a size"),
        (parse_resize, "0", "at least 1"),
        (parse_floats, "a,b", "comma list"),
        (parse_position, "3", "not a position"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse(text)


def test_flags_parse_back_to_the_same_request():
    from cnntool.cli.followups import request_flags
    from cnntool.cli.options import model_options

    request = ModelRequest(
        arch="resnet18",
        weights="my weights.pt",
        input_size=(1, 28, 28),
        resize="none",
        mean=(0.1307,),
        std=(0.3081,),
        interpolation="bicubic",
        classes="names.txt",
        num_classes=10,
        use_ema=True,
        trust_code=True,
    )
    caffe = ModelRequest(
        arch="vgg16",
        input_size=(None, 48, 64),
        resize=(56, 72),
        mean=(104 / 255, 117 / 255, 123 / 255),
        std=(1.0,),
        channel_order="bgr",
        input_range=255,
    )
    seen = []

    @click.command()
    @click.argument("model")
    @model_options
    def command(model, model_request):
        seen.append(model_request)

    result = CliRunner().invoke(command, ["m.pt", *request_flags(request)])
    assert result.exit_code == 0, result.output
    assert asdict(seen[0]) == asdict(request) and request_flags(ModelRequest()) == []
    # a Caffe feed, an exact resize and fractions in the mean spell back to themselves too
    result = CliRunner().invoke(command, ["m.pt", *request_flags(caffe)])
    assert result.exit_code == 0, result.output
    assert asdict(seen[1]) == asdict(caffe)


def test_report_warnings_name_the_first_unreadable_image_and_the_enlargement():
    report = ScanReport(
        total=10, read=8, skipped=(("a.png", "a.png: truncated"), ("b.png", "empty")), upscale=8.0
    )
    skipped, enlarged = report_warnings(report, (3, 224, 224))
    assert skipped == "skipped 2 unreadable image(s) of 10, e.g. a.png: truncated"
    assert "enlarged 8.0× on average" in enlarged and "(3×224×224)" in enlarged
    assert report_warnings(ScanReport(total=3, read=3, skipped=(), upscale=2.0), (3, 8, 8)) == []
