"""Checkpoint formats people actually have: Lightning, EMA, safetensors with metadata, model
folders with config.json, fine-tuned heads; and files that are not checkpoints at all."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

import tests.own_models as own
from cnntool import save_checkpoint
from cnntool.core.loading import checkpoints
from cnntool.core.loading.models import check_forward, load_model
from cnntool.errors import CnnToolError, ModelLoadError, UntrustedCodeError

OWN = "tests.own_models"


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _seeded(seed=0, num_classes=3):
    torch.manual_seed(seed)
    return own.classifier(num_classes).eval()


def test_lightning_checkpoint_strips_the_prefix_and_reads_hyper_parameters(tmp_path):
    net = _seeded(num_classes=4)
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    state["loss_fn.weight"] = torch.ones(4)  # a weighted loss: not part of the network
    path = tmp_path / "epoch=3.ckpt"
    torch.save(
        {
            "epoch": 3,
            "state_dict": state,
            "pytorch-lightning_version": "2.4.0",
            "hyper_parameters": {"class_names": ["ant", "bee", "cow", "dog"], "lr": 0.1},
        },
        path,
    )
    loaded = load_model(str(path), arch=f"{OWN}:classifier", device="cpu")
    assert _same(loaded.module, net)
    assert loaded.class_names == ["ant", "bee", "cow", "dog"]
    assert loaded.class_names_source == "the checkpoint (hyper_parameters.class_names)"
    assert (
        "stripped the prefix 'model.' from 4 keys and ignored 1 other keys (loss_fn.weight)"
        in loaded.notes
    )
    assert (
        "rebuilt the classifier 'head' with the checkpoint's 4 outputs (the model defines 3)"
        in loaded.notes
    )


def test_nested_prefix_and_no_fitting_prefix(tmp_path):
    net = _seeded()
    nested = {f"net.backbone.{k}": v for k, v in net.state_dict().items()}
    loaded = load_model(
        f"{OWN}:classifier", weights=_save(tmp_path / "n.pt", {"state_dict": nested}), device="cpu"
    )
    assert _same(loaded.module, net) and any("'net.backbone.'" in note for note in loaded.notes)
    wrong = {f"model.{k}": v for k, v in list(net.state_dict().items())[:-1]}  # one key short
    with pytest.raises(ModelLoadError, match="do not fit .* missing"):
        load_model(f"{OWN}:classifier", weights=_save(tmp_path / "w.pt", wrong), device="cpu")


def _save(path, obj):
    torch.save(obj, path)
    return str(path)


def test_ema_weights_are_chosen_with_use_ema(tmp_path):
    plain, ema = _seeded(0), _seeded(1)
    path = _save(
        tmp_path / "timm_style.pth",
        {
            "state_dict": plain.state_dict(),
            "state_dict_ema": {f"module.{k}": v for k, v in ema.state_dict().items()},
        },
    )
    default = load_model(f"{OWN}:classifier", weights=path, device="cpu")
    assert _same(default.module, plain)
    assert (
        "the checkpoint also holds EMA weights (state_dict_ema): --use-ema loads them"
        in default.notes
    )
    chosen = load_model(f"{OWN}:classifier", weights=path, device="cpu", use_ema=True)
    assert _same(chosen.module, ema) and "loaded the EMA weights (state_dict_ema)" in chosen.notes
    # Lightning's EMA callbacks keep both in the state dict, under two prefixes
    both = {
        **{f"model.{k}": v for k, v in plain.state_dict().items()},
        **{f"model_ema.module.{k}": v for k, v in ema.state_dict().items()},
    }
    lightning = _save(tmp_path / "l.ckpt", {"state_dict": both})
    assert _same(load_model(f"{OWN}:classifier", weights=lightning, device="cpu").module, plain)
    assert _same(
        load_model(f"{OWN}:classifier", weights=lightning, device="cpu", use_ema=True).module, ema
    )
    with pytest.raises(ModelLoadError, match="holds no EMA weights"):
        load_model(
            f"{OWN}:classifier",
            weights=_save(tmp_path / "p.pt", plain.state_dict()),
            device="cpu",
            use_ema=True,
        )


def test_safetensors_metadata_and_model_folder(tmp_path):
    net = _seeded()
    path = save_checkpoint(
        net,
        tmp_path / "m.safetensors",
        class_names=["x", "y", "z"],
        preprocessing={"input_size": [3, 40, 40], "mean": [0.5], "std": [0.5]},
    )
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["class_names"]) == ["x", "y", "z"]
    assert json.loads(metadata["preprocessing"])["input_size"] == [3, 40, 40]
    # an HF-style folder: model.safetensors + config.json with id2label
    folder = tmp_path / "hf"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps({"id2label": {"0": "cat", "2": "fox", "1": "dog"}})
    )
    loaded = load_model(str(folder), arch=f"{OWN}:classifier", device="cpu")
    assert _same(loaded.module, net) and loaded.class_names == ["cat", "dog", "fox"]
    assert loaded.class_names_source.endswith("config.json")
    with pytest.raises(ModelLoadError, match="holds no model weights"):
        load_model(str(tmp_path / "hf" / ".."), arch=f"{OWN}:classifier", device="cpu")


@pytest.mark.parametrize(
    "stored, expected",
    [
        ({"classes": ["b", "a"]}, ["b", "a"]),
        ({"class_to_idx": {"cat": 1, "ant": 0}}, ["ant", "cat"]),
        ({"idx_to_class": {1: "cat", 0: "ant"}}, ["ant", "cat"]),
        ({"hyper_parameters": {"classes": ["p", "q"]}}, ["p", "q"]),
    ],
)
def test_class_name_formats_in_checkpoints_survive_weights(tmp_path, stored, expected):
    net = _seeded(num_classes=2)
    path = _save(tmp_path / "c.pt", {"model": net.state_dict(), **stored})
    loaded = load_model(f"{OWN}:classifier", weights=path, device="cpu", num_classes=2)
    assert loaded.class_names == expected


def test_class_names_with_a_gap_are_refused(tmp_path):
    path = _save(
        tmp_path / "gap.pt",
        {"model": _seeded().state_dict(), "class_to_idx": {"a": 0, "b": 1, "c": 3}},
    )
    with pytest.raises(
        CnnToolError, match="does not number its 3 classes 0 to 2 .index 2 is missing"
    ):
        load_model(f"{OWN}:classifier", weights=path, device="cpu")


def test_num_classes_for_factories_with_and_without_the_argument(tmp_path):
    takes = load_model(f"{OWN}:classifier", device="cpu", num_classes=7)
    assert takes.module.head.out_features == 7 and not takes.notes
    replaced = load_model(f"{OWN}:fixed_classifier", device="cpu", num_classes=7)
    assert replaced.module.head.out_features == 7
    assert replaced.notes == ["replaced the classifier head (4→3) with a new one for 7 classes"]
    assert check_forward(replaced) == 7 and replaced.num_outputs == 7
    # a checkpoint with another head is rebuilt for code specs too; explicit --num-classes must fit
    path = _save(tmp_path / "five.pt", _seeded(num_classes=5).state_dict())
    assert (
        load_model(f"{OWN}:fixed_classifier", weights=path, device="cpu").module.head.out_features
        == 5
    )
    with pytest.raises(ModelLoadError, match=r"head.weight: checkpoint \[5, 4\] vs model \[7, 4\]"):
        load_model(f"{OWN}:classifier", weights=path, device="cpu", num_classes=7)


def test_files_that_are_not_checkpoints(tmp_path):
    tensor = _save(tmp_path / "tensor.pt", torch.zeros(3))
    listed = _save(tmp_path / "list.pt", [torch.zeros(3)])
    for path, words in (
        (tensor, "holds a tensor, not a checkpoint or model"),
        (listed, "holds a list, not a checkpoint or model"),
    ):
        with pytest.raises(ModelLoadError, match=words):
            load_model(path, arch=f"{OWN}:classifier", device="cpu")
    noise = tmp_path / "random.pt"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(noise), arch=f"{OWN}:classifier", device="cpu")
    assert "is not a PyTorch checkpoint" in str(info.value)
    assert not isinstance(info.value, UntrustedCodeError) and "--trust-code" not in str(info.value)


def test_pickle_protocol_warnings_do_not_reach_stderr(tmp_path):
    # protocol 4 makes torch's weights-only unpickler warn "Detected pickle protocol 4"
    path = tmp_path / "p4.pt"
    torch.save(_seeded().state_dict(), path, pickle_protocol=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # torch's safe unpickler does not know protocol 4's framing: that needs trust
        with pytest.raises(
            UntrustedCodeError, match="uses pickle features that the safe loader refuses"
        ):
            checkpoints.read_checkpoint(path)
        assert (
            checkpoints.read_checkpoint(path, trust_code=True).state.keys()
            == _seeded().state_dict().keys()
        )
    assert not [w for w in caught if "pickle" in str(w.message).lower()]
    script = (
        f"from cnntool.core.loading.models import load_model; "
        f"load_model({str(path)!r}, arch='tests.own_models:classifier', device='cpu', "
        "trust_code=True)"
    )
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", script],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "pickle" not in done.stderr.lower()


def test_nan_weights_warn_once_and_make_the_forward_an_error(tmp_path):
    net = _seeded()
    with torch.no_grad():
        net.conv.weight[0, 0, 0, 0] = float("nan")
        net.head.bias[1] = float("inf")
    loaded = load_model(
        f"{OWN}:classifier", weights=_save(tmp_path / "nan.pt", net.state_dict()), device="cpu"
    )
    assert loaded.nonfinite == ("conv.weight (1 NaN)", "head.bias (1 inf)")
    assert loaded.warnings == [
        "2 tensors of the model hold NaN or inf values: conv.weight (1 NaN), "
        "head.bias (1 inf); results computed with them are meaningless"
    ]
    with pytest.raises(
        CnnToolError, match="output is NaN or inf because 2 of its tensors hold NaN"
    ):
        check_forward(loaded)


def test_a_failing_forward_is_one_sentence_also_for_torchscript(tmp_path):
    fixed = load_model(f"{OWN}:fixed_size", device="cpu")
    with pytest.raises(CnnToolError) as info:
        check_forward(fixed)
    message = str(info.value)
    assert message.startswith(
        "the model failed on a 1×3×224×224 input (mat1 and mat2 shapes cannot be multiplied"
    )
    assert (
        message.endswith("set its input with --input-size or --preprocessing")
        and "\n" not in message
    )
    assert check_forward(fixed, (3, 16, 16)) == 5
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(own.fixed_size()).save(str(path))
    scripted = load_model(str(path), device="cpu")
    with pytest.raises(CnnToolError) as info:
        check_forward(scripted)
    message = str(info.value)
    assert "\n" not in message and "mat1 and mat2 shapes cannot be multiplied" in message
    assert "TorchScript" not in message


def test_class_names_and_outputs_disagree_is_a_warning(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("one\ntwo\n")
    loaded = load_model(f"{OWN}:classifier", device="cpu", classes=str(names))
    assert loaded.class_names_source == f"--classes {names}"
    check_forward(loaded)
    assert loaded.warnings == [
        f"the model has 3 outputs but 2 class names (from --classes {names}); "
        "names past either end are not shown"
    ]


def test_conflicting_flags_are_refused(tmp_path):
    path = _save(tmp_path / "w.pt", _seeded().state_dict())
    with pytest.raises(ModelLoadError, match="already a weight file"):
        load_model(path, arch=f"{OWN}:classifier", weights=path, device="cpu")
    with pytest.raises(ModelLoadError, match="--arch names the architecture of a weight file"):
        load_model("lenet5-mnist", arch="resnet18", device="cpu")
    with pytest.raises(ModelLoadError, match="--num-classes needs --weights"):
        load_model("lenet5-mnist", num_classes=3, device="cpu")
