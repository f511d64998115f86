"""gradcheck: no false alarms on real models, planted bugs caught and localized, kinks and
rounding reported as inconclusive, torch.autograd.gradcheck's verdicts matched, the CLI's
exit codes and records."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cnntool.core.hooks import hook_count
from cnntool.core.loading.models import load_model
from cnntool.errors import CnnToolError
from cnntool.tasks.gradcheck import gradcheck
from tests import buggy_layers as B

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "buggy_layers.py"


@pytest.fixture(autouse=True)
def one_thread():
    # float64 on the CPU runs many small kernels (e.g. grouped convolutions per group); on a
    # busy 2-core machine one thread is several times faster than two fighting over the cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _summary(result) -> str:
    return "; ".join(
        f"{t.path}: {t.verdict} {t.max_rel_err}" for t in result.failures
    ) or ", ".join(result.warnings)


# --- no false alarms on real models ------------------------------------------------------------

REAL_MODELS = [
    # spec, input size, keyword arguments
    ("lenet5-mnist", 28, {}),
    ("lenet5-mnist-adv", 28, {}),
    ("lenet5-mnist-adv", 28, {"per_layer": True}),
    ("efficientnet_lite0", 64, {"per_layer": True}),
    ("efficientnet_lite0", 64, {"params": False}),  # the input, through the whole network
    ("resnet18", 32, {"per_layer": True}),
    ("resnet18", 32, {"directions": 1, "coordinates": 1, "batch": 1}),  # every parameter
    ("mobilenet_v2", 64, {"per_layer": True}),
    ("alexnet", 64, {"per_layer": True}),
]


@pytest.mark.parametrize(
    "spec,size,kwargs",
    REAL_MODELS,
    ids=[
        f"{s}-{'per-layer' if k.get('per_layer') else 'model'}-{i}"
        for i, (s, _, k) in enumerate(REAL_MODELS)
    ],
)
def test_real_models_pass_without_false_alarms(spec, size, kwargs):
    torch.manual_seed(0)  # torchvision's random weights: the same draw whatever ran before
    loaded = load_model(spec, device="cpu")
    shape = (loaded.input_shape[0], size, size)
    result = gradcheck(loaded.module, shape, **kwargs)
    assert result.ok, _summary(result)
    assert result.tensors and not result.skipped
    checks = [c for t in result.tensors for c in t.checks]
    conclusive = [c for c in checks if c.verdict != "inconclusive"]
    assert len(conclusive) >= 0.7 * len(checks)
    assert max(c.rel_err for c in conclusive) < 1e-3


# --- planted bugs --------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", sorted(B.PLANTED))
def test_planted_bug_is_localized_per_layer(factory):
    module, tensors = B.PLANTED[factory]
    result = gradcheck(getattr(B, factory)(), (1, 8, 8), per_layer=True)
    assert not result.ok
    assert {(t.module, t.name) for t in result.failures} == {(module, name) for name in tensors}
    assert all(t.max_rel_err > 5e-3 for t in result.failures)


@pytest.mark.parametrize("factory", sorted(B.PLANTED))
def test_planted_bug_fails_the_whole_model_check(factory):
    result = gradcheck(getattr(B, factory)(), (1, 8, 8))
    assert not result.ok


def test_correct_custom_functions_pass_in_both_modes():
    for per_layer in (False, True):
        result = gradcheck(B.correct_net(), (1, 8, 8), per_layer=per_layer)
        assert result.ok, _summary(result)


def test_scaled_backward_error_is_measured_as_one_percent():
    result = gradcheck(B.net_with_scaled_backward(), (1, 8, 8), per_layer=True)
    errors = [c.rel_err for t in result.failures for c in t.checks if c.verdict == "fail"]
    assert errors and all(abs(e - 0.01 / 1.01) < 1e-4 for e in errors)


# --- agreement with torch.autograd.gradcheck -----------------------------------------------------

SMALL_MODULES = {
    "linear": (lambda: nn.Linear(5, 4), (5,)),
    "conv": (lambda: nn.Conv2d(2, 3, 3), (2, 5, 5)),
    "tanh": (lambda: nn.Tanh(), (6,)),
    "hand-linear": (lambda: B.HandLinear(6, 6), (6,)),
    "hand-silu": (lambda: B.HandSiLU(), (6,)),
    "scaled-backward": (lambda: B.HandLinear(6, 6, B.ScaledBackwardLinear), (6,)),
    "transposed-weight-grad": (lambda: B.HandLinear(6, 6, B.TransposedWeightGradLinear), (6,)),
    "dropped-term": (lambda: B.HandSiLU(B.DroppedTermSiLU), (6,)),
}


@pytest.mark.parametrize("name", sorted(SMALL_MODULES))
def test_verdict_agrees_with_torch_autograd_gradcheck(name):
    make, shape = SMALL_MODULES[name]
    torch.manual_seed(0)
    module = make().double()
    x = torch.randn(3, *shape, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in module.parameters())

    def call(x, *values):
        return torch.func.functional_call(module, dict(zip(names, values, strict=True)), (x,))

    theirs = torch.autograd.gradcheck(call, (x, *params), raise_exception=False)
    ours = gradcheck(module, shape, input=x.detach(), per_layer=True)
    assert ours.ok == theirs
    assert theirs == (name in ("linear", "conv", "tanh", "hand-linear", "hand-silu"))


# --- kinks and rounding are inconclusive, not failures ------------------------------------------


def test_relu_at_its_kink_is_inconclusive_not_a_failure():
    # every element sits exactly on ReLU's kink: no step is conclusive
    result = gradcheck(nn.ReLU(), (4,), input=torch.zeros(2, 4), per_layer=True)
    (tensor,) = result.tensors
    assert tensor.verdict == "inconclusive" and result.ok
    assert all(c.reason == "kink" for c in tensor.checks)
    assert any("could not be checked conclusively" in w for w in result.warnings)


def test_max_pool_ties_are_redrawn_until_conclusive():
    # 2x2 windows of equal values: every dense direction crosses a tie
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1.0
    result = gradcheck(nn.MaxPool2d(2), (1, 4, 4), input=x, per_layer=True, coordinates=4)
    (tensor,) = result.tensors
    assert result.ok and tensor.verdict == "pass"
    assert tensor.count("inconclusive") > 0 and tensor.count("pass") > 0
    assert {c.kind for c in tensor.checks} & {"sparse", "coordinate"}


def test_too_small_eps_is_warned_about_not_failed():
    result = gradcheck(B.correct_net(), (1, 8, 8), eps=1e-13)
    assert result.ok
    assert any("rounding" in w and "too small" in w for w in result.warnings)


# --- the model is left alone; results are reproducible -------------------------------------------


def test_model_is_not_changed():
    model = B.correct_net().train()
    model.conv.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gradcheck(model, (1, 8, 8), per_layer=True)
    gradcheck(model, (1, 8, 8), layer="act")
    assert model.training and not model.conv.weight.requires_grad and hook_count(model) == 0
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_same_seed_same_result_other_seed_other_numbers():
    first = gradcheck(B.correct_net(), (1, 8, 8), seed=3).to_records()
    assert gradcheck(B.correct_net(), (1, 8, 8), seed=3).to_records() == first
    assert gradcheck(B.correct_net(), (1, 8, 8), seed=4).to_records() != first


def test_layer_loss_checks_only_what_reaches_the_layer():
    result = gradcheck(B.net_with_transposed_weight_grad(), (1, 8, 8), layer="act")
    assert result.ok  # the bug sits after `act`
    assert {s.path for s in result.skipped} == {
        "square.weight",
        "square.bias",
        "head.weight",
        "head.bias",
    }
    assert "act" in result.loss


def test_user_mistakes_are_one_sentence_errors():
    with pytest.raises(CnnToolError, match="--layer"):
        gradcheck(nn.Conv2d(1, 2, 3), (1, 5, 5))  # 4-D output: no logits for cross-entropy
    with pytest.raises(CnnToolError, match="one or the other"):
        gradcheck(B.correct_net(), (1, 8, 8), layer="act", per_layer=True)
    with pytest.raises(CnnToolError, match="cannot run"):
        gradcheck(B.correct_net(), (3, 8, 8))
    with pytest.raises(CnnToolError, match="unknown layer"):
        gradcheck(B.correct_net(), (1, 8, 8), layer="sqaure")


# --- the command line ----------------------------------------------------------------------------


def _cli(monkeypatch, capsys, *args):
    """Run `cnntool ARGS` in-process through the real entry point; (exit code, stdout, stderr)."""
    from cnntool.cli import console
    from cnntool.cli.main import COMMANDS, main

    if "gradcheck" not in COMMANDS:  # until cnntool/cli/main.py registers the command
        monkeypatch.setitem(COMMANDS, "gradcheck", ("cnntool.cli.gradcheck:gradcheck_command", ""))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(console, "_console", None)  # a console bound to the captured stderr
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    console.set_quiet(False)
    return exit_info.value.code, out, err


def test_cli_exits_1_and_names_the_buggy_module(monkeypatch, capsys):
    code, out, err = _cli(
        monkeypatch,
        capsys,
        "gradcheck",
        f"{FIXTURES}:net_with_dropped_term",
        "--trust-code",
        "--per-layer",
    )
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["module"], r["tensor"]) for r in records if r["verdict"] == "fail"] == [
        ("act", "input")
    ]
    assert "float64 copy" in err and "wrong gradients: act.input" in err and "FAIL" in err
    assert "Traceback" not in err


def test_cli_exits_0_when_all_pass_and_writes_csv(monkeypatch, capsys):
    code, out, err = _cli(
        monkeypatch,
        capsys,
        "gradcheck",
        "lenet5-mnist",
        "--params",
        "--format",
        "csv",
        "-q",
        "--device",
        "cpu",
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("module,tensor,shape,verdict") and len(lines) == 1 + 8
    assert all(",pass," in line for line in lines[1:])


def test_cli_user_errors_exit_1_without_traceback(monkeypatch, capsys):
    code, _, err = _cli(monkeypatch, capsys, "gradcheck", f"{FIXTURES}:correct_net")
    assert code == 1 and "--trust-code" in err and "Traceback" not in err
    code, _, err = _cli(
        monkeypatch, capsys, "gradcheck", "lenet5-mnist", "--layer", "conv1", "--per-layer"
    )
    assert code == 1 and "one or the other" in err
