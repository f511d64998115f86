"""profile: hand-counted tiny models, and every torchvision classifier against its metadata.

torchvision's `Weights.meta` gives `num_params` and `_ops` (GMACs at the weights' crop size,
rounded to 3 decimals). Models are built without weights and with their parameters on the meta
device, so the sweep over all of them needs no download and almost no memory.

Every result computed here also passes `assert_adds_up` (through the `profile` wrapper below):
rows are each module's own work, so they add up to the total. How fast profiling is belongs to
benchmarks/profile_bench.py, not to these tests.
"""

from __future__ import annotations

import contextlib
import json
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnntool.core.hooks import hook_count
from cnntool.errors import CnnToolError, InputSizeError
from cnntool.tasks.profile import ProfileResult
from cnntool.tasks.profile import profile as count


def assert_adds_up(result: ProfileResult, model: nn.Module) -> None:
    """What every profile must satisfy, whatever the model.

    A row is one module's *own* work: the ops of a leaf, or the ops a parent calls itself
    (a residual add, a functional matmul), never its children's; a container with no own work
    or parameters has no row (with all_modules=True it has one, of its own work only). So:
    - MACs, FLOPs and activation bytes of the rows add up exactly to the total;
    - a row's FLOPs are at least 2 per MAC (the convention: 2 per MAC plus everything else);
    - each module owning parameters directly has a row with exactly those, so the rows' params
      add up to every module's own parameters; the total counts each distinct parameter once,
      which is less only when modules share one (tied weights).
    """
    rows = result.layers
    assert len({row.name for row in rows}) == len(rows) and "total" not in {
        row.name for row in rows
    }
    for key in ("macs", "flops", "activation_bytes"):
        assert sum(getattr(row, key) for row in rows) == getattr(result.total, key), key
    assert all(row.macs >= 0 and row.flops >= 2 * row.macs for row in rows)
    own = {
        name: sum(p.numel() for p in module.parameters(recurse=False))
        for name, module in model.named_modules()
    }
    assert {row.name: row.params for row in rows if row.params} == {
        n: p for n, p in own.items() if p
    }
    distinct = sum(p.numel() for p in model.parameters())
    assert result.total.params == distinct <= sum(row.params for row in rows)
    if distinct == sum(own.values()):  # nothing shared
        assert sum(row.params for row in rows) == result.total.params


def profile(model: nn.Module, *args, **kwargs) -> ProfileResult:
    """tasks.profile.profile, with its result checked by assert_adds_up."""
    result = count(model, *args, **kwargs)
    assert_adds_up(result, model)
    return result


@contextlib.contextmanager
def weights_on_meta():
    """Build models whose parameters and buffers land on the meta device (no init cost).

    `with torch.device("meta")` is not enough: RegNet's constructor computes its widths with
    tensor ops and reads them back with .tolist(), which the meta device cannot do.
    """
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(self, name, param):
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer(self, name, tensor, persistent=True):
        register_buffer(self, name, None if tensor is None else tensor.to("meta"), persistent)

    with (
        mock.patch.object(nn.Module, "register_parameter", parameter),
        mock.patch.object(nn.Module, "register_buffer", buffer),
    ):
        yield


def torchvision_cases():
    """(name, crop, builder kwargs, num_params, GMACs) for every distinct weights entry."""
    cases = {}
    for name in torchvision.models.list_models(module=torchvision.models):
        for weights in torchvision.models.get_model_weights(name):
            meta = weights.meta
            crop = weights.transforms().crop_size[0]
            kwargs = {}
            if name.startswith("vit_"):  # the builder sets image_size from the weights
                kwargs["image_size"] = meta["min_size"][0]
            if name == "googlenet":  # the builder drops the aux heads after loading weights
                kwargs["aux_logits"] = False
            key = (name, crop, meta["num_params"])
            cases.setdefault(key, (name, crop, kwargs, meta["num_params"], meta["_ops"]))
    return sorted(cases.values(), key=lambda case: (case[0], case[1]))


CASES = torchvision_cases()


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize(
    "name, crop, kwargs, num_params, gmacs", CASES, ids=[f"{case[0]}-{case[1]}" for case in CASES]
)
def test_matches_torchvision_metadata(name, crop, kwargs, num_params, gmacs):
    with weights_on_meta():
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    result = profile(model, (3, crop, crop))
    assert result.mode == "meta"
    assert result.total.params == num_params
    assert round(result.total.macs / 1e9, 3) == gmacs
    assert result.uncounted == ()


def test_every_torchvision_classifier_is_covered():
    names = {case[0] for case in CASES}
    assert len(names) == len(torchvision.models.list_models(module=torchvision.models)) >= 80


@pytest.mark.parametrize(
    "name, params, gmacs",
    [
        ("alexnet", 61_100_840, 0.714),
        ("vgg16", 138_357_544, 15.47),
        ("resnet50", 25_557_032, 4.089),
    ],
)
def test_reference_figures(name, params, gmacs):
    with torch.device("meta"):
        model = torchvision.models.get_model(name)
    result = profile(model)
    assert (result.total.params, round(result.total.macs / 1e9, 3)) == (params, gmacs)


def test_a_model_with_real_weights_is_counted_on_the_meta_device():
    """A model on the CPU is still counted on a weightless meta copy (what makes profiling
    fast whatever the model's size: benchmarks/profile_bench.py), and counts the same."""
    model = torchvision.models.vgg16()
    result = profile(model)
    assert result.mode == "meta"
    assert (result.total.params, round(result.total.macs / 1e9, 3)) == (138_357_544, 15.47)
    assert next(model.parameters()).device.type == "cpu" and hook_count(model) == 0


def layer(result, name):
    return next(row for row in result.layers if row.name == name)


def test_single_convolution_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
    result = profile(model, (3, 10, 10))
    conv = layer(result, "0")
    macs = 8 * 10 * 10 * 3 * 3 * 3  # outputs × inputs per output
    assert conv.macs == macs == 21_600
    assert conv.flops == 2 * macs + 8 * 10 * 10  # + bias, 1 per output
    assert conv.params == 8 * 27 + 8
    assert conv.output_shape == (1, 8, 10, 10)
    assert conv.activation_bytes == 8 * 10 * 10 * 4
    assert conv.receptive_field.size == (3, 3)
    assert result.total.macs == macs and result.total.params == 224


def test_linear_by_hand_scales_with_batch():
    model = nn.Sequential(nn.Linear(5, 7))
    one, three = profile(model, (5,)), profile(model, (5,), batch=3)
    assert (one.total.macs, one.total.flops, one.total.params) == (35, 2 * 35 + 7, 42)
    assert (three.total.macs, three.total.flops) == (3 * 35, 3 * 77)
    assert three.total.output_shape == (3, 7)


class FunctionalAttention(nn.Module):
    """A projection module plus matmuls and a softmax called functionally in forward."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4, bias=False)

    def forward(self, x):  # x: (N, 3, 4)
        q = self.proj(x)
        scores = q @ x.transpose(1, 2)  # (N, 3, 3)
        return scores.softmax(-1) @ x  # (N, 3, 4)


def test_functional_matmul_is_counted_and_attributed_to_the_running_module():
    result = profile(FunctionalAttention(), (3, 4))
    proj, root = layer(result, "proj"), layer(result, "")
    assert (proj.macs, proj.flops) == (3 * 4 * 4, 2 * 48)
    assert root.macs == 3 * 3 * 4 + 3 * 3 * 4  # q @ xᵀ, then scores @ x
    assert root.flops == 2 * root.macs + 5 * 9  # softmax: 5 per score
    assert result.total.macs == 120 and result.total.flops == 96 + 144 + 45


class Reused(nn.Module):
    """One Linear called twice; a second Linear whose weight is tied to the first's."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.tied = nn.Linear(4, 4)
        self.tied.weight = self.fc.weight

    def forward(self, x):
        return self.tied(torch.relu(self.fc(self.fc(x))))


def test_reused_module_counts_params_once_and_macs_at_each_call():
    result = profile(Reused(), (4,))
    fc, tied = layer(result, "fc"), layer(result, "tied")
    assert (fc.calls, fc.params, fc.macs, fc.flops) == (2, 20, 32, 2 * (32 + 4))
    assert (tied.calls, tied.params, tied.macs) == (1, 20, 16)
    assert result.total.params == 16 + 4 + 4  # the tied weight once
    assert result.total.macs == 48
    assert layer(result, "").flops == 4  # the functional relu


def test_elementwise_norm_and_pooling_rules():
    model = nn.Sequential(
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 2×6×6 -> 2×3×3
        nn.AvgPool2d(3, stride=1),
        nn.Flatten(),
        nn.LayerNorm(2),
    )
    result = profile(model, (2, 6, 6))
    flops = {row.name: row.flops for row in result.layers}
    assert flops == {"0": 2 * 72, "1": 72, "2": 18 * (4 - 1), "3": 2 * 9, "4": 0, "5": 5 * 2}
    assert result.total.macs == 0


@pytest.mark.parametrize("size, out, flops_per_plane", [(6, 2, 36), (5, 3, 7 * 7), (7, 1, 49)])
def test_adaptive_average_pool_counts_each_window(size, out, flops_per_plane):
    result = profile(nn.AdaptiveAvgPool2d(out), (3, size, size))
    assert result.total.flops == 3 * flops_per_plane


def test_attention_counts_the_same_on_meta_and_in_a_real_forward():
    model = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    meta, real = profile(model, (5, 8)), profile(model, (5, 8), device="cpu")
    assert (meta.mode, real.mode) == ("meta", "forward")
    attention = 5 * 8 * 24 + 2 * (2 * 5 * 5 * 4) + 5 * 8 * 8  # in-proj, q·kᵀ and ·v, out-proj
    mlp = 5 * 8 * 16 * 2
    assert meta.total.macs == real.total.macs == attention + mlp
    assert meta.uncounted == real.uncounted == ()


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        x = self.conv(x)
        return x * 2 if x.sum() > 0 else x


def test_falls_back_to_a_real_forward_when_meta_cannot_run():
    result = profile(DataDependent(), (3, 8, 8))
    assert result.mode == "forward"
    assert result.total.macs == 4 * 6 * 6 * 27


def test_meta_model_that_meta_cannot_run_is_a_clear_error():
    with torch.device("meta"):
        model = DataDependent()
    with pytest.raises(CnnToolError, match="cannot run on the meta device"):
        profile(model, (3, 8, 8))


def test_too_small_input_names_the_layer():
    model = torchvision.models.alexnet()
    message = (
        "input 3×16×16 is too small for AlexNet: the output of features.5 (MaxPool2d) would be 0×0"
    )
    with pytest.raises(InputSizeError) as meta_error:
        profile(model, (3, 16, 16))
    with pytest.raises(InputSizeError) as real_error:
        profile(model, (3, 16, 16), device="cpu")
    assert str(meta_error.value) == str(real_error.value) == message
    assert hook_count(model) == 0


def test_bad_input_shape_is_an_input_size_error():
    with pytest.raises(InputSizeError, match="positive integers"):
        profile(nn.Linear(2, 2), (0, 2))


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_user_model_is_not_modified(device):
    model = torchvision.models.resnet18().train()
    model.layer1[0].bn1.eval()
    model.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    profile(model, (3, 64, 64), device=device)
    assert hook_count(model) == 0
    assert [m.training for m in model.modules()] == modes
    assert not model.fc.weight.requires_grad and model.fc.bias.requires_grad
    after = model.state_dict()
    assert all(
        after[k].device.type == "cpu" and torch.equal(after[k], v) for k, v in before.items()
    )


def test_records_are_json_ready_and_end_with_the_total():
    result = profile(torchvision.models.alexnet())
    records = json.loads(json.dumps(result.to_records()))
    assert records[-1]["name"] == "total" and records[-1]["params"] == 61_100_840
    assert {
        "name",
        "type",
        "params",
        "macs",
        "flops",
        "output_shape",
        "receptive_field",
        "activation_bytes",
    } <= set(records[0])
    pool5 = next(r for r in records if r["name"] == "features.12")
    assert pool5["receptive_field"] == {"size": [195, 195], "jump": [32, 32], "start": [31.0, 31.0]}
    assert pool5["output_shape"] == [1, 256, 6, 6]
    assert next(r for r in records if r["name"] == "classifier.6")["receptive_field"] is None
    assert sum(r["macs"] for r in records[:-1]) == records[-1]["macs"]
    assert "MACs" in result.convention and result.mode == "meta"
    assert result.input_shape == (3, 224, 224)


def _inclusive_macs(result: ProfileResult) -> dict[str, int]:
    """MACs of each module and everything under it: the sum of the rows in its subtree."""
    totals: dict[str, int] = {}
    for row in result.layers:
        parts = row.name.split(".") if row.name else []
        for depth in range(len(parts) + 1):
            name = ".".join(parts[:depth])
            totals[name] = totals.get(name, 0) + row.macs
    return {name: macs for name, macs in totals.items() if macs}


def _meta(build):
    with torch.device("meta"):
        return build().eval()


SUBTREE_CASES = {
    "functional-attention": (FunctionalAttention, (3, 4)),
    "reused-and-tied": (Reused, (4,)),
    "transformer-layer": (lambda: nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), (5, 8)),
    "alexnet": (torchvision.models.alexnet, (3, 224, 224)),
    "resnet18": (torchvision.models.resnet18, (3, 224, 224)),
    "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small, (3, 224, 224)),
}


@pytest.mark.parametrize("case", sorted(SUBTREE_CASES))
def test_rows_of_each_subtree_add_up_to_torch_flop_counter_for_that_module(case):
    """Containers vs leaves: our rows are exclusive (each module's own work), torch's
    FlopCounterMode reports each module inclusive of its children, 2 FLOPs per MAC. Summing our
    rows over each module's subtree must give torch's figure for that module, for every module
    (the model itself included), on models with functional matmuls, reused and tied modules,
    attention, residual blocks and squeeze-excitation."""
    from torch.utils.flop_counter import FlopCounterMode

    build, shape = SUBTREE_CASES[case]
    model = _meta(build)
    result = profile(model, shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *shape, device="meta"))
    root = type(model).__name__
    theirs = {}
    for key, ops in counter.get_flop_counts().items():
        if key != "Global" and sum(ops.values()):
            theirs["" if key == root else key.removeprefix(root + ".")] = sum(ops.values())
    assert {name: 2 * macs for name, macs in _inclusive_macs(result).items()} == theirs


def test_unexecuted_modules_are_listed_with_their_params():
    with torch.device("meta"):
        model = torchvision.models.googlenet(aux_logits=True, init_weights=False)
    result = profile(model)
    aux = layer(result, "aux1.fc1")
    assert (aux.calls, aux.macs, aux.output_shape) == (0, 0, None) and aux.params > 0
    assert result.total.params == sum(p.numel() for p in model.parameters())


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize(
    "to_torchscript",
    [torch.jit.script, lambda model: torch.jit.trace(model, torch.zeros(1, 3, 10, 10))],
)
def test_torchscript_work_is_counted_at_the_root(to_torchscript):
    model = to_torchscript(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval())
    result = profile(model, (3, 10, 10))
    assert (result.total.macs, result.total.params, result.uncounted) == (21_600, 224, ())
    assert layer(result, "").macs == 21_600


def test_unknown_ops_are_named_not_hidden():
    class Cumulative(nn.Module):
        def forward(self, x):
            return F.relu(x).cumsum(-1)

    result = profile(Cumulative(), (4,))
    assert result.uncounted == ("aten.cumsum",)
    assert result.total.flops == 4  # the relu
