"""Loading models from every kind of MODEL spec, safely, with diagnostics instead of tracebacks."""

import contextlib
from pathlib import Path

import pytest
import torch
import torchvision

from cnntool.core.loading.models import load_model
from cnntool.errors import CnnToolError, ModelLoadError, UnknownNameError, UntrustedCodeError
from tests.tiny_models import seeded_tiny_net

TINY_PY = Path(__file__).with_name("tiny_models.py")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


@contextlib.contextmanager
def storages_tagged_as_cuda():
    """Make torch.save record every storage's location as 'cuda:0', as a GPU run would."""
    tagger = lambda storage: "cuda:0"  # noqa: E731
    loader = lambda storage, location: None  # noqa: E731
    torch.serialization.register_package(-100, tagger, loader)
    try:
        yield
    finally:
        registry = torch.serialization._package_registry
        registry[:] = [entry for entry in registry if entry[1] is not tagger]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_saved_checkpoint_loads_on_cpu(tmp_path):
    net = torchvision.models.resnet18(num_classes=7)
    path = tmp_path / "gpu_run.pth"
    with storages_tagged_as_cuda():
        torch.save({"epoch": 3, "state_dict": net.state_dict()}, path)
    # the file really is GPU-tagged: plain torch.load refuses it on this machine
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(path, weights_only=True)
    loaded = load_model(str(path), arch="resnet18", device="cpu")
    assert _same_weights(loaded.module, net)
    assert loaded.class_names is None  # 7 classes: not ImageNet's names
    assert loaded.module.fc.out_features == 7
    assert next(loaded.module.parameters()).device.type == "cpu"


@pytest.mark.parametrize(
    "wrap", ["bare", "state_dict", "model_state_dict", "model", "module.", "_orig_mod.module."]
)
def test_checkpoint_layouts(tmp_path, wrap):
    net = torchvision.models.resnet18()
    state = net.state_dict()
    if wrap.endswith("."):
        obj = {wrap + k: v for k, v in state.items()}
    elif wrap == "bare":
        obj = state
    else:
        obj = {wrap: state, "optimizer": {"lr": 0.1}, "classes": None}
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    loaded = load_model(str(path), arch="resnet18", device="cpu")
    assert _same_weights(loaded.module, net)
    assert loaded.class_names[0] == "tench"
    assert not loaded.module.training


def test_safetensors_and_user_class_names(tmp_path):
    from safetensors.torch import save_file

    net = seeded_tiny_net()
    path = tmp_path / "tiny.safetensors"
    save_file(net.state_dict(), str(path))
    loaded = load_model(str(path), arch="tests.tiny_models:TinyNet", device="cpu")
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(loaded.module(x), net(x))

    named = tmp_path / "named.pt"
    torch.save({"model": net.state_dict(), "classes": ["cat", "dog", "fox"]}, named)
    assert load_model(str(named), arch="tests.tiny_models:TinyNet", device="cpu").class_names == [
        "cat",
        "dog",
        "fox",
    ]


def test_torchscript_archive(tmp_path):
    net = seeded_tiny_net()
    path = tmp_path / "scripted.pt"
    torch.jit.script(net).save(str(path))
    loaded = load_model(str(path), device="cpu")
    x = torch.randn(1, 3, 16, 16)
    assert torch.allclose(loaded.module(x), net(x), atol=1e-6)
    assert loaded.source.startswith("TorchScript")


class _Marker:
    """Unpickling this creates a file: proof that code from a checkpoint ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_untrusted_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(
        {"state_dict": seeded_tiny_net().state_dict(), "payload": _Marker(str(marker))}, path
    )
    with pytest.raises(UntrustedCodeError, match="--trust-code"):
        load_model(str(path), arch="tests.tiny_models:TinyNet", device="cpu")
    assert not marker.exists()
    # with the flag the user vouched for the file, and it is unpickled (the payload runs)
    load_model(str(path), arch="tests.tiny_models:TinyNet", device="cpu", trust_code=True)
    assert marker.exists()


def test_pickled_whole_module_needs_trust(tmp_path):
    net = seeded_tiny_net()
    path = tmp_path / "whole.pt"
    torch.save(net, path)
    with pytest.raises(UntrustedCodeError):
        load_model(str(path), device="cpu")
    loaded = load_model(str(path), device="cpu", trust_code=True)
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(loaded.module(x), net(x))


def test_python_file_spec_needs_trust(tmp_path):
    net = seeded_tiny_net(3)
    weights = tmp_path / "w.pth"
    torch.save(net.state_dict(), weights)
    spec = f"{TINY_PY}:TinyNet"
    with pytest.raises(UntrustedCodeError, match="--trust-code"):
        load_model(spec, weights=str(weights), device="cpu")
    loaded = load_model(spec, weights=str(weights), device="cpu", trust_code=True)
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(loaded.module(x), net(x))
    with pytest.raises(UnknownNameError, match="TinyNet"):
        load_model(f"{TINY_PY}:TinyNt", device="cpu", trust_code=True)


def test_package_module_spec():
    loaded = load_model("torchvision.models:resnet18", device="cpu")
    assert isinstance(loaded.module, torchvision.models.ResNet)


def test_mismatch_names_keys_and_counts(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(path), arch="resnet34", device="cpu")
    message = str(info.value)
    assert "missing" in message and "layer1.2.conv1.weight" in message
    assert message.count("\n") == 0

    path = tmp_path / "lenet_as_tiny.pth"
    torch.save(seeded_tiny_net().state_dict(), path)
    with pytest.raises(ModelLoadError, match=r"wrongly shaped|missing|unexpected"):
        load_model(str(path), arch="lenet5-mnist", device="cpu")


def test_state_dict_without_arch_says_what_to_do(tmp_path):
    path = tmp_path / "bare.pth"
    torch.save(seeded_tiny_net().state_dict(), path)
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(str(path), device="cpu")


def test_truncated_and_garbage_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save(torchvision.models.resnet18().state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    for path in (truncated, garbage):
        with pytest.raises(ModelLoadError, match="cannot read") as info:
            load_model(str(path), arch="resnet18", device="cpu")
        assert "\n" not in str(info.value)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"), arch="resnet18", device="cpu")


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownNameError) as info:
        load_model("resnet181", device="cpu")
    assert "resnet18" in str(info.value) and "cnntool models" in str(info.value)


def test_torchvision_architecture_has_its_preprocessing():
    loaded = load_model("inception_v3", device="cpu")
    prep = loaded.preprocessing
    assert prep.crop == (299, 299) and prep.resize == 342
    assert len(loaded.class_names) == 1000
    assert loaded.source.endswith("random init")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_one_sentence():
    with pytest.raises(CnnToolError, match="CUDA is not available"):
        load_model("lenet5-mnist", device="cuda")
    assert load_model("lenet5-mnist", device="auto").device.type in ("cpu", "mps")
