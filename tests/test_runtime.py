"""core.runtime: a prepared model gives the naive path's numbers (logits, hooked activations,
input gradients) to float rounding, and the user's module comes back exactly as it was."""

import pytest
import torch
import torchvision
from torch import nn

from cnntool.core.hooks import capture, hook_count
from cnntool.core.loading.zoo import load_builtin
from cnntool.core.runtime import fold_batchnorm, prepare_for_scan
from cnntool.core.runtime.folding import Folding, FoldPair, find_pairs
from cnntool.core.runtime.layout import choose_channels_last, convolution_share
from cnntool.core.runtime.precision import cpu_has_native_bf16
from cnntool.errors import CnnToolError
from cnntool.tasks.attack import fgsm

CPU = torch.device("cpu")
DEVICES = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def _resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    # random running statistics, so that folding BatchNorm is not a no-op
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


# name -> (model factory, input shape, a hooked layer, a BatchNorm, the convolution before it)
MODELS = {
    "lite0": (
        lambda: load_builtin("efficientnet_lite0"),
        (3, 96, 96),
        "_blocks.5",
        "_blocks.5._bn2",
        "_blocks.5._project_conv",
    ),
    "lenet5": (lambda: load_builtin("lenet5-mnist"), (1, 28, 28), "relu2", None, "conv2"),
    "resnet18": (_resnet18, (3, 64, 64), "layer3", "layer2.0.bn2", "layer2.0.conv2"),
}


def _batch(shape, n=4, seed=1):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def _close(a, b, rel=1e-4):
    """Equal to float rounding: max |a − b| within `rel` of b's largest magnitude."""
    a, b = a.float().cpu(), b.float().cpu()
    assert a.shape == b.shape
    scale = float(b.abs().max().clamp_min(1e-6))
    assert float((a - b).abs().max()) <= rel * scale, float((a - b).abs().max()) / scale


def _state(model):
    """Everything restore() must put back, compared by identity and by value."""
    return {
        "tensors": [
            (
                name,
                t,
                t.data.data_ptr(),
                t.dtype,
                t.device,
                t.stride(),
                t.requires_grad,
                t.detach().clone(),
            )
            for name, t in [*model.named_parameters(), *model.named_buffers()]
        ],
        "params": {name: list(m._parameters.items()) for name, m in model.named_modules()},
        "modules": [
            (name, m, m.training, "forward" in m.__dict__) for name, m in model.named_modules()
        ],
        "hooks": hook_count(model),
    }


def _assert_same_state(before, after):
    assert after["hooks"] == before["hooks"]
    assert after["modules"] == before["modules"]
    assert after["params"].keys() == before["params"].keys()
    for name in before["params"]:
        assert [(k, v is None) for k, v in after["params"][name]] == [
            (k, v is None) for k, v in before["params"][name]
        ]
    for (n0, t0, p0, d0, dev0, s0, r0, v0), (n1, t1, p1, d1, dev1, s1, r1, v1) in zip(
        before["tensors"], after["tensors"], strict=True
    ):
        assert (n1, p1, d1, dev1, s1, r1) == (n0, p0, d0, dev0, s0, r0), n0
        assert t1 is t0
        assert torch.equal(v1, v0), n0


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    factory, shape, layer, bn, conv = MODELS[request.param]
    return request.param, factory().eval(), shape, layer, bn, conv


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_logits_equal_the_naive_forward(case, device):
    name, model, shape, *_ = case
    x = _batch(shape)
    with torch.no_grad():
        naive = model(x)  # on the CPU (cuDNN's default TF32 would not be the reference)
    for fold in (False, True):
        with prepare_for_scan(model, device, fold_bn=fold, example_input_shape=shape) as prepared:
            assert prepared.channels_last  # every one of these is a convolutional net
            with prepared.forward():
                assert torch.is_inference_mode_enabled()
                logits = prepared(prepared.inputs(x))
            if fold and name != "lenet5":
                assert prepared.folded
        assert next(model.parameters()).device == CPU
        _close(logits, naive)


def test_hooked_activations_equal_the_naive_ones(case):
    _name, model, shape, layer, _bn, _conv = case
    x = _batch(shape)
    with torch.no_grad(), capture(model, [layer]) as cap:
        model(x)
    naive = cap.activations[layer]
    with (
        prepare_for_scan(model, CPU, fold_bn=True, example_input_shape=shape) as prepared,
        prepared.forward(),
        capture(prepared.module, [layer]) as cap,
    ):
        prepared(prepared.inputs(x))
        _close(cap.activations[layer], naive)


def test_folding_keeps_bn_outputs_and_the_kept_convolutions(case):
    """A hook on a folded BatchNorm sees what it returned; a convolution named in `keep` is not
    folded, so its own output is still the pre-BatchNorm one."""
    _name, model, shape, _layer, bn, conv = case
    if bn is None:
        pytest.skip("LeNet-5 has no BatchNorm")
    x = _batch(shape)
    with torch.no_grad(), capture(model, [bn, conv]) as cap:
        model(x)
    naive = dict(cap.activations)
    with prepare_for_scan(model, CPU, fold_bn=True, example_input_shape=shape) as prepared:
        assert bn in {p.bn for p in prepared.folded}
        with prepared.forward(), capture(model, [bn]) as cap:
            prepared(prepared.inputs(x))
        _close(cap.activations[bn], naive[bn])
    with prepare_for_scan(
        model, CPU, fold_bn=True, keep=[conv], example_input_shape=shape
    ) as prepared:
        assert conv not in {p.conv for p in prepared.folded}
        with prepared.forward(), capture(model, [conv, bn]) as cap:
            prepared(prepared.inputs(x))
        _close(cap.activations[conv], naive[conv])
        _close(cap.activations[bn], naive[bn])


def test_fgsm_input_gradient_equals_the_naive_one(case):
    """Input gradients agree to float rounding; FGSM's sign(∇) can only flip where the
    gradient is ~0 relative to its scale, which moves those pixels by 2ε."""
    _name, model, shape, *_ = case
    x, eps = _batch(shape), 2 / 255
    labels = torch.arange(len(x)) % 10

    def gradient(module, images):
        images = images.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(module(images), labels)
        return torch.autograd.grad(loss, images)[0]

    naive_gradient = gradient(model, x)
    naive_adversarial = fgsm(model, x, labels, eps)
    with prepare_for_scan(model, CPU, needs_grad=True, example_input_shape=shape) as prepared:
        assert not any(p.requires_grad for p in model.parameters())
        with prepared.forward():
            assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
            images = prepared.inputs(x)
            assert images.is_contiguous(memory_format=torch.channels_last)
            fast_gradient = gradient(prepared, images)
            fast_adversarial = fgsm(prepared.module, images, labels, eps)
    # Per image, relative L2. A pre-activation within rounding of a ReLU6 kink may land on the
    # other side (lite0, seed 1: one of 17,280 values at _blocks.8._bn0 is −1.1e-6 naive and
    # +8.1e-7 channels-last), which moves that image's gradient by ~1%: allowed for one image.
    per_image = (fast_gradient - naive_gradient).flatten(1).norm(dim=1) / naive_gradient.flatten(
        1
    ).norm(dim=1)
    assert float(per_image.median()) < 1e-4
    assert int((per_image > 1e-4).sum()) <= 1 and float(per_image.max()) < 0.05
    flipped = (fast_adversarial - naive_adversarial).abs() > 1e-6
    assert flipped.float().mean() < 1e-3
    assert (naive_gradient.abs()[flipped] <= 0.02 * naive_gradient.abs().max()).all()


def test_restore_puts_back_every_tensor_flag_and_mode():
    model = _resnet18()
    # a user's module in an unusual state: training, one frozen layer, one channels-last weight
    model.train()
    model.layer1.requires_grad_(False)
    model.conv1.weight.data = model.conv1.weight.data.contiguous(memory_format=torch.channels_last)
    model.fc.register_forward_hook(lambda *a: None)
    before = _state(model)
    prepared = prepare_for_scan(
        model, CPU, needs_grad=True, fold_bn=True, example_input_shape=(3, 64, 64)
    )
    assert not model.training and model.layer2[0].conv1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    assert "forward" in model.layer2[0].bn1.__dict__  # folded (training BN counts as eval here)
    prepared.restore()
    prepared.restore()  # idempotent
    _assert_same_state(before, _state(model))


def test_restore_after_a_failing_forward():
    model = _resnet18()
    before = _state(model)
    with (
        pytest.raises(RuntimeError),
        prepare_for_scan(model, CPU, fold_bn=True, example_input_shape=(3, 64, 64)) as p,
        p.forward(),
    ):
        p(torch.rand(2, 5, 64, 64))  # wrong channel count
    _assert_same_state(before, _state(model))


def test_hooks_registered_before_preparing_still_fire():
    model = load_builtin("lenet5-mnist")
    seen = []
    handle = model.conv2.register_forward_hook(lambda m, a, out: seen.append(out.clone()))
    x = _batch((1, 28, 28))
    with torch.no_grad():
        model(x)
    with (
        prepare_for_scan(model, CPU, example_input_shape=(1, 28, 28)) as prepared,
        prepared.forward(),
    ):
        prepared(prepared.inputs(x))
    handle.remove()
    assert len(seen) == 2
    assert seen[1].is_contiguous(memory_format=torch.channels_last)
    _close(seen[1], seen[0])


def test_states_made_in_the_scan_merge_under_its_grad_context():
    """diagnose's RunningStats made inside inference mode merge (in place) under grad_context."""
    from cnntool.tasks.diagnose.stats import RunningStats

    model = load_builtin("lenet5-mnist")
    with prepare_for_scan(model, CPU, example_input_shape=(1, 28, 28)) as prepared:

        def scanned(seed):
            with prepared.forward(), capture(model, ["relu2"]) as cap:
                prepared(prepared.inputs(_batch((1, 28, 28), seed=seed)))
                state = RunningStats(64, CPU)
                state.update(cap.activations["relu2"])
                return state

        with pytest.raises(RuntimeError, match="inference tensor"):
            scanned(1).merge(scanned(2))
        merged = scanned(1)
        with prepared.grad_context():
            merged.merge(scanned(2))
        assert merged.images == 8


def test_grad_modes():
    model = load_builtin("lenet5-mnist")
    with prepare_for_scan(model, CPU, inference_mode=False) as prepared, prepared.forward():
        assert not torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        assert prepared.describe() == "channels-last, no grad, fp32"
    with prepare_for_scan(model, CPU, channels_last=False) as prepared, prepared.forward():
        assert torch.is_inference_mode_enabled()
        assert prepared.describe() == "contiguous (NCHW), inference mode, fp32"
        assert prepared.inputs(torch.rand(2, 1, 28, 28)).is_contiguous()


# --- channels-last rule ----------------------------------------------------------------------


class PatchThenDense(nn.Module):
    """A ViT-like net: a 3×3 single-channel convolution on 4×4, then a 16 -> 100 Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.dense = nn.Linear(16, 100)

    def forward(self, x):
        return self.dense(self.conv(x).flatten(1))


def test_convolution_share_counts_multiply_adds():
    # conv: 16 outputs × 9 taps = 144; linear: 100 outputs × 16 inputs = 1600
    assert convolution_share(PatchThenDense(), (1, 4, 4)) == pytest.approx(144 / 1744)
    # LeNet-5: conv1 28·28·32·9, conv2 14·14·64·32·9; linear1 200·3136, linear2 10·200
    conv = 28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9
    linear = 200 * 3136 + 10 * 200
    assert convolution_share(load_builtin("lenet5-mnist"), (1, 28, 28)) == pytest.approx(
        conv / (conv + linear)
    )


def test_channels_last_rule():
    assert choose_channels_last(PatchThenDense(), CPU, "auto", (1, 4, 4))[0] is False
    assert choose_channels_last(
        nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), CPU, "auto", (1, 2, 2)
    ) == (False, "no 2-D convolution")
    assert choose_channels_last(load_builtin("lenet5-mnist"), CPU, "auto", (1, 28, 28))[0]
    assert choose_channels_last(PatchThenDense(), CPU, True, (1, 4, 4)) == (True, "asked for")
    assert (
        choose_channels_last(
            load_builtin("lenet5-mnist"), torch.device("mps"), "auto", (1, 28, 28)
        )[0]
        is False
    )


def test_a_predict_run_imports_no_dynamo(tmp_path):
    """The layout decision runs one real forward, not a meta trace: torch's meta kernels go
    through its Python reference ops, which import torch._dynamo and sympy (about a second of
    every command's start-up, #23). A whole predict run must not import them."""
    import subprocess
    import sys

    from PIL import Image

    from cnntool.core.data import open_data

    for i, digit in enumerate(open_data("mnist-5k").spread(3).arrays):
        Image.fromarray(digit).save(tmp_path / f"{i}.png")
    code = (
        "import atexit, sys; atexit.register(lambda: print(sorted(m for m in sys.modules if "
        "m in ('torch._dynamo', 'sympy')), file=sys.stderr)); from cnntool.cli.main import main; "
        f"main(['predict', 'lenet5-mnist', {str(tmp_path)!r}, '-q'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    assert done.stderr.strip().splitlines()[-1] == "[]", done.stderr


# --- BatchNorm folding ------------------------------------------------------------------------


def _conv_bn(branch: bool = False, inplace_between: bool = False):
    class ConvBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1, bias=False)
            self.bn = nn.BatchNorm2d(2, eps=0.0)
            self.conv.weight.data = torch.tensor([[[[2.0]]], [[[-1.0]]]])
            self.bn.running_mean.copy_(torch.tensor([1.0, 0.5]))
            self.bn.running_var.copy_(torch.tensor([4.0, 0.25]))
            self.bn.weight.data = torch.tensor([3.0, 1.0])
            self.bn.bias.data = torch.tensor([0.5, -1.0])

        def forward(self, x):
            y = self.conv(x)
            if inplace_between:
                y.add_(1.0)
            out = self.bn(y)
            return out + y if branch else out

    return ConvBN().eval()


def test_fold_batchnorm_by_hand():
    model = _conv_bn()
    weight, bias = fold_batchnorm(model.conv.weight, None, model.bn)
    # channel 0: 3·(2x − 1)/2 + 0.5 = 3x − 1;  channel 1: 1·(−x − 0.5)/0.5 − 1 = −2x − 2
    assert weight.flatten().tolist() == [3.0, -2.0]
    assert bias.tolist() == [-1.0, -2.0]
    x = torch.tensor([[[[1.0, 2.0]]]])
    with (
        prepare_for_scan(model, CPU, fold_bn=True, example_input_shape=(1, 1, 2)) as prepared,
        prepared.forward(),
    ):
        assert [(p.conv, p.bn) for p in prepared.folded] == [("conv", "bn")]
        assert prepared(x).flatten().tolist() == [2.0, 5.0, -4.0, -6.0]
    assert model.conv.bias is None and "forward" not in model.bn.__dict__


def test_no_fold_when_the_convolution_output_is_used_elsewhere():
    with_branch = _conv_bn(branch=True)
    with prepare_for_scan(
        with_branch, CPU, fold_bn=True, example_input_shape=(1, 2, 2)
    ) as prepared:
        assert prepared.folded == ()
        assert "differed" in prepared.describe()
    changed_in_place = _conv_bn(inplace_between=True)
    assert find_pairs(changed_in_place, torch.rand(2, 1, 2, 2)) == []


def test_no_fold_under_a_kept_wrapper():
    """A kept module whose output is the convolution's own output protects the convolution."""
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 1)), nn.BatchNorm2d(2)).eval()
    x = torch.rand(2, 1, 3, 3)
    assert find_pairs(model, x) == [FoldPair("0.0", "1")]
    assert find_pairs(model, x, keep=["0"]) == []
    assert find_pairs(model, x, keep=["1"]) == [FoldPair("0.0", "1")]


def test_folding_undo_alone():
    model = _resnet18()
    before = _state(model)
    folding = Folding(model, find_pairs(model, torch.rand(2, 3, 32, 32)))
    folding.apply()
    assert len(folding.pairs) == 20
    folding.undo()
    _assert_same_state(before, _state(model))


# --- precision --------------------------------------------------------------------------------


def test_precision_errors_are_one_sentence():
    model = load_builtin("lenet5-mnist")
    for precision, words in [
        ("fp16", "needs a CUDA device"),
        ("tf32", "needs a CUDA device"),
        ("fp8", "unknown precision"),
    ]:
        with pytest.raises(CnnToolError, match=words):
            prepare_for_scan(model, CPU, precision=precision)
    if not cpu_has_native_bf16():
        with pytest.raises(CnnToolError, match="AVX512-BF16 or AMX"):
            prepare_for_scan(model, CPU, precision="bf16")


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bfloat16")
def test_bf16_on_the_cpu_is_close_and_says_so():
    model = load_builtin("efficientnet_lite0")
    x = _batch((3, 96, 96), n=8)
    with torch.no_grad():
        naive = model(x)
    with prepare_for_scan(
        model, CPU, precision="bf16", example_input_shape=(3, 96, 96)
    ) as prepared:
        with prepared.forward():
            logits = prepared(prepared.inputs(x))
        assert logits.dtype == torch.bfloat16
        assert prepared.describe() == "channels-last, inference mode, bf16"
        assert "bfloat16" in prepared.precision_note
    _close(logits, naive, rel=0.1)
    assert model._fc.weight.dtype == torch.float32


def _tf32_switches():
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return torch.backends.cuda.matmul.fp32_precision, conv.fp32_precision
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "precision,rel", [("fp32", 1e-4), ("tf32", 2e-2), ("bf16", 0.1), ("fp16", 2e-2)]
)
def test_cuda_precisions(precision, rel):
    model = load_builtin("efficientnet_lite0")
    x = _batch((3, 96, 96), n=8)
    with torch.no_grad():
        naive = model(x)  # on the CPU: the reference
    before = _tf32_switches()
    with prepare_for_scan(
        model, "cuda", precision=precision, example_input_shape=(3, 96, 96)
    ) as prepared:
        assert next(model.parameters()).is_cuda
        with prepared.forward():
            logits = prepared(prepared.inputs(x))
    assert _tf32_switches() == before
    assert not next(model.parameters()).is_cuda
    _close(logits, naive, rel=rel)
