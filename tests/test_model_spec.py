"""A MODEL string is classified once (core/loading/spec.py), in the documented order: built-in,
timm:, user code, weight file, torchvision; an architecture name never names a weight file."""

import pytest

from cnntool.core.loading.spec import SpecKind, architecture_spec, model_spec
from cnntool.errors import UnknownNameError


def test_each_kind_of_model_string(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.pt").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    (tmp_path / "resnet18").write_bytes(b"")  # a file named like an architecture wins as MODEL
    cases = {
        "lenet5-mnist": SpecKind.BUILTIN,
        "timm:resnet18": SpecKind.TIMM,
        "net.py:Net": SpecKind.CODE,
        "package.module:build": SpecKind.CODE,
        "weights.pt": SpecKind.WEIGHT_FILE,
        "missing.safetensors": SpecKind.WEIGHT_FILE,  # a weight suffix, even before it exists
        "folder": SpecKind.WEIGHT_FILE,
        "resnet18": SpecKind.WEIGHT_FILE,
        "alexnet": SpecKind.TORCHVISION,
    }
    assert {text: model_spec(text).kind for text in cases} == cases
    assert model_spec("timm:resnet18").name == "resnet18"
    assert model_spec("alexnet").name == "alexnet"
    assert architecture_spec("resnet18").kind is SpecKind.TORCHVISION  # --arch: never a file


def test_unknown_strings_are_one_sentence_with_close_names():
    close = r"unknown model 'resnet19'; did you mean .*'resnet18'"
    with pytest.raises(UnknownNameError, match=close):
        model_spec("resnet19")
    with pytest.raises(UnknownNameError, match=r"unknown architecture 'weights\.pt'"):
        architecture_spec("weights.pt")
