"""core/hooks.py: capture and activation-backward substitution.

Hand-set tiny nets give exact numbers; torchvision models with random weights cross-check
against captum (where captum is right) and against a hand-swapped autograd function (where
captum silently falls back to the plain gradient: functional F.relu, ReLU6).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Deconvolution, GuidedBackprop
from torch import nn
from torchvision.models.googlenet import BasicConv2d

from cnntool.core.hooks import (
    capture,
    hook_count,
    module_hooks,
    preserved_state,
    substitute_activation_backward,
)
from cnntool.errors import CnnToolError, UnknownNameError
from tests.backward_reference import hand_swapped, make, norm_close, quiet_captum


def mode_stack() -> list:
    return torch.overrides._get_current_function_mode_stack()


@pytest.fixture(autouse=True)
def no_mode_left_behind():
    yield
    assert mode_stack() == []


# ---------------------------------------------------------------------------------------------
# capture


class ConvReluConv(nn.Module):
    """1x1 convs with hand-set weights: conv1 gives (x, -x), the in-place ReLU then overwrites
    conv1's output tensor, conv2 gives 2*relu(x) + 3*relu(-x)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv2.weight.copy_(torch.tensor([2.0, 3.0]).view(1, 2, 1, 1))

    def forward(self, x):
        return self.conv2(self.relu(self.conv1(x)))


X = torch.tensor([[[[1.0, -2.0], [3.0, -4.0]]]])
CONV1 = torch.cat([X, -X], dim=1)
RELU = CONV1.clamp(min=0)
OUT = torch.tensor([[[[2.0, 6.0], [6.0, 12.0]]]])


def test_capture_clones_outputs_so_an_inplace_relu_cannot_corrupt_them():
    model = ConvReluConv()
    with capture(model, ["conv1", "relu", "conv2"]) as cap:
        out = model(X)
    assert torch.equal(out, OUT)
    assert torch.equal(cap.activations["conv1"], CONV1)  # negatives survive the in-place ReLU
    assert torch.equal(cap.activations["relu"], RELU)
    assert torch.equal(cap.activations["conv2"], OUT)
    assert not cap.activations["conv1"].requires_grad
    assert cap.outputs == {} and cap.gradients == {}
    assert hook_count(model) == 0


def test_capture_gradients_match_hand_values_and_autograd():
    model = ConvReluConv()
    x = X.clone().requires_grad_()
    with capture(model, ["conv1", "relu"], gradients=True) as cap:
        (model(x) ** 2).sum().backward()
    # d/d out = 2*out; conv2 weights 2 and 3; the ReLU passes where conv1's output is positive.
    hand = torch.tensor([[[[8.0, 0.0], [24.0, 0.0]], [[0.0, 36.0], [0.0, 72.0]]]])
    assert torch.equal(cap.gradients["conv1"], hand)

    conv1 = F.conv2d(x, model.conv1.weight)
    relu = conv1.relu()
    loss = (F.conv2d(relu, model.conv2.weight) ** 2).sum()
    ref_conv1, ref_relu = torch.autograd.grad(loss, [conv1, relu])
    assert torch.equal(cap.gradients["conv1"], ref_conv1)
    assert torch.equal(cap.gradients["relu"], ref_relu)


class ReusedReLU(nn.Module):
    """One in-place ReLU module called twice: identity -> relu -> (1 - h) -> relu."""

    def __init__(self):
        super().__init__()
        self.lin0 = nn.Linear(2, 2)
        self.relu = nn.ReLU(inplace=True)
        self.lin1 = nn.Linear(2, 2)
        with torch.no_grad():
            self.lin0.weight.copy_(torch.eye(2))
            self.lin0.bias.zero_()
            self.lin1.weight.copy_(-torch.eye(2))
            self.lin1.bias.fill_(1.0)

    def forward(self, x):
        return self.relu(self.lin1(self.relu(self.lin0(x))))


def test_reused_module_is_captured_on_each_call_in_forward_order():
    model = ReusedReLU()
    x = torch.tensor([[-1.0, 2.0]])
    weights = torch.tensor([[3.0, 5.0]])
    with capture(model, ["relu"], gradients=True) as cap:
        (model(x) * weights).sum().backward()
    first, second = cap.all_activations["relu"]
    assert torch.equal(first, torch.tensor([[0.0, 2.0]]))
    assert torch.equal(second, torch.tensor([[1.0, 0.0]]))
    assert torch.equal(cap.activations["relu"], second)
    # Backward reaches the second call first; the list stays in forward order.
    g_first, g_second = cap.all_gradients["relu"]
    assert torch.equal(g_second, weights)
    assert torch.equal(g_first, torch.tensor([[-3.0, 0.0]]))

    o1 = torch.relu(model.lin0(x))
    o2 = torch.relu(model.lin1(o1))
    ref = torch.autograd.grad((o2 * weights).sum(), [o1, o2])
    assert torch.equal(g_first, ref[0]) and torch.equal(g_second, ref[1])


def test_capture_keeps_only_the_latest_forward_and_records_every_name_of_a_module():
    model = ReusedReLU()
    with capture(model, {"a": model.relu, "b": model.relu}) as cap:
        model(torch.tensor([[5.0, 5.0]]))
        model(torch.tensor([[-1.0, 2.0]]))
    assert [len(cap.all_activations[n]) for n in "ab"] == [2, 2]
    assert torch.equal(cap.activations["a"], torch.tensor([[1.0, 0.0]]))
    assert torch.equal(cap.activations["b"], cap.activations["a"])


def test_graph_attached_outputs_backprop_from_the_pre_relu_value():
    model = ConvReluConv()
    x = X.clone().requires_grad_()
    with capture(model, ["conv1"], detach=False) as cap:
        model(x)
    kept = cap.outputs["conv1"]
    assert kept.requires_grad and torch.equal(kept, CONV1)
    kept[0, 1].sum().backward()  # channel 1 is -x
    assert torch.equal(x.grad, -torch.ones_like(X))


class Tripwire(nn.Module):
    def forward(self, x):
        raise AssertionError("the forward should have stopped before this layer")


def test_stop_early_ends_the_forward_after_the_last_requested_layer():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), Tripwire())
    after_forward = []
    with capture(model, ["0", "1"], stop_early=True) as cap:
        model(X)
        after_forward.append("ran")  # a bare model(x) stop skips the rest of the block
    assert after_forward == []
    assert set(cap.activations) == {"0", "1"}

    with capture(model, ["1"], stop_early=True) as cap:
        results = [cap.run(X), cap.run(-X)]  # run() swallows the stop: loops keep going
        assert results == [None, None]
        assert torch.equal(cap.activations["1"], model[1](model[0](-X)))
    assert hook_count(model) == 0


def test_a_stop_passes_through_other_captures_to_its_own():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), Tripwire())
    with capture(model, ["1"], stop_early=True) as outer, capture(model, ["0"]) as inner:
        model(X)
    assert torch.equal(outer.activations["1"], inner.activations["0"].relu())
    assert hook_count(model) == 0


def test_errors_in_a_capture_block_propagate():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), Tripwire())
    with pytest.raises(KeyError), capture(model, ["0"], stop_early=True) as cap:
        cap.run(X)
        raise KeyError("not ours to swallow")
    with pytest.raises(UnknownNameError, match="did you mean"), capture(model, ["00"]):
        pass
    with pytest.raises(ValueError, match="not submodules"), capture(model, {"stranger": nn.ReLU()}):
        pass
    lstm = nn.Sequential(nn.LSTM(2, 2))
    with pytest.raises(CnnToolError, match="not a tensor"), capture(lstm, ["0"]):
        lstm(torch.zeros(1, 1, 2))
    assert hook_count(model) == 0 and hook_count(lstm) == 0


# ---------------------------------------------------------------------------------------------
# substitute_activation_backward: hand-set numbers


class TwoLayer(nn.Module):
    """x = (1, 2) -> h = (1, 2, -1, 8) -> act -> (2, -3, 4, 5) . act(h).

    The gradient reaching the activation is (2, -3, 4, 5): a positive one at a negative input
    (deconv keeps it, guided drops it), a negative one at a positive input (guided drops it),
    and a positive one above ReLU6's clip (guided on ReLU6 drops it)."""

    def __init__(self, act):
        super().__init__()
        self.fc1 = nn.Linear(2, 4, bias=False)
        self.act = act
        self.fc2 = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 4.0]]))
            self.fc2.weight.copy_(torch.tensor([[2.0, -3.0, 4.0, 5.0]]))

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


X2 = torch.tensor([1.0, 2.0])
# Worked by hand: input grad = fc1^T (rule applied to (2, -3, 4, 5) at h = (1, 2, -1, 8)).
EXPECTED = {
    "relu": {"plain": [2.0, 17.0], "guided": [2.0, 20.0], "deconv": [-2.0, 20.0]},
    "relu6": {"plain": [2.0, -3.0], "guided": [2.0, 0.0], "deconv": [-2.0, 20.0]},
    "leaky_relu": {"plain": [1.6, 17.0], "guided": [1.6, 20.0], "deconv": [-2.0, 20.0]},
}
FORMS = {
    "relu": [
        nn.ReLU(),
        nn.ReLU(inplace=True),
        F.relu,
        lambda h: F.relu(h, inplace=True),
        lambda h: F.relu(input=h),
        torch.relu,
        torch.relu_,
        F.relu_,
        lambda h: h.relu(),
        lambda h: h.relu_(),
        lambda h: h.clamp(min=0),
        lambda h: torch.clamp(h, 0),
        lambda h: h.clamp_(min=0),
        lambda h: h.clamp_min(0),
        lambda h: torch.clip(h, min=0),
    ],
    "relu6": [
        nn.ReLU6(),
        nn.ReLU6(inplace=True),
        F.relu6,
        lambda h: F.relu6(h, inplace=True),
        nn.Hardtanh(0.0, 6.0),
        lambda h: F.hardtanh(h, 0.0, 6.0, True),
        lambda h: F.hardtanh_(h, 0.0, 6.0),
    ],
    "leaky_relu": [
        nn.LeakyReLU(0.1),
        nn.LeakyReLU(0.1, inplace=True),
        lambda h: F.leaky_relu(h, 0.1),
        lambda h: F.leaky_relu_(h, negative_slope=0.1),
    ],
}
CASES = [(kind, i, act) for kind, acts in FORMS.items() for i, act in enumerate(acts)]


@pytest.mark.parametrize("rule", ["plain", "guided", "deconv"])
@pytest.mark.parametrize("kind,form,act", CASES, ids=[f"{k}-{i}" for k, i, _ in CASES])
def test_every_spelling_of_a_rectifier_follows_the_rule_exactly_once(kind, form, act, rule):
    model = TwoLayer(act)
    x = X2.clone().requires_grad_()
    with substitute_activation_backward(model, rule) as sub:
        model(x).sum().backward()  # backward inside the block: the rule's clamp is not counted
    assert x.grad.tolist() == pytest.approx(EXPECTED[kind][rule])
    assert sub.substituted == Counter({kind: 1})
    assert sub.uncovered == Counter()


@pytest.mark.parametrize("kind", list(FORMS))
def test_plain_rule_matches_autograd(kind):
    model = TwoLayer(FORMS[kind][0])
    x = X2.clone().requires_grad_()
    model(x).sum().backward()
    assert x.grad.tolist() == pytest.approx(EXPECTED[kind]["plain"])


@pytest.mark.parametrize(
    "kind,batch,expected",
    [
        # row 1: h = (1, 2, -1, 8), gradient gets through: the true one. Row 2: h = (0, -1, 0,
        # -4), all off: the gradient (2, -3, 4, 5) passes where descent raises h (−3 only)
        ("relu", [[1.0, 2.0], [0.0, -1.0]], [[2.0, 17.0], [0.0, -3.0]]),
        # row 2: h = (6, 6, -6, 24), all clipped: passes where descent brings h back inside
        # (2 at h = 6 and 5 at h = 24 lower it; −3 at 6 and 4 at −6 would push it further out)
        ("relu6", [[1.0, 2.0], [6.0, 6.0]], [[2.0, -3.0], [2.0, 20.0]]),
        # a leaky ReLU always passes 0.1 of it: the true gradient, h = (0, -1, 0, -4) too
        ("leaky_relu", [[1.0, 2.0], [0.0, -1.0]], [[1.6, 17.0], [-0.2, 1.7]]),
    ],
)
def test_redirected_rule_lets_a_stuck_image_through_and_leaves_the_others(kind, batch, expected):
    """Lucid's redirected ReLU, per image of the batch: the true gradient where any gets
    through the activation; else the gradient as through the identity, except where descent
    would push the input further out of the pass-through range."""
    for act in FORMS[kind][:2]:
        model = TwoLayer(act)
        x = torch.tensor(batch).requires_grad_()
        with substitute_activation_backward(model, "redirected") as sub:
            model(x).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6, atol=1e-6)
        assert sub.substituted == Counter({kind: 1})


def test_hardtanh_gates_guided_gradients_on_its_own_range():
    x = torch.tensor([-2.0, -0.5, 0.5, 2.0], requires_grad=True)
    weights = torch.tensor([1.0, -1.0, 1.0, 1.0])
    model = nn.Hardtanh()
    grads = {}
    for rule in ("plain", "guided", "deconv"):
        with substitute_activation_backward(model, rule) as sub:
            (model(x * 1) * weights).sum().backward()
        grads[rule], x.grad = x.grad.tolist(), None
        assert sub.substituted == Counter({"hardtanh": 1})
    assert grads == {
        "plain": [0.0, -1.0, 1.0, 0.0],
        "guided": [0.0, 0.0, 1.0, 0.0],
        "deconv": [1.0, 0.0, 1.0, 1.0],
    }


def test_a_callable_rule_sees_the_pre_activation_input_of_an_inplace_relu():
    model = TwoLayer(nn.ReLU(inplace=True))
    seen = []

    def tenfold(inp, out, grad):
        seen.append((inp.clone(), out.clone(), grad.clone()))
        return 10 * grad * (inp > 0)

    x = X2.clone().requires_grad_()
    with substitute_activation_backward(model, tenfold) as sub:
        model(x).sum().backward()
    assert x.grad.tolist() == [20.0, 170.0]
    ((inp, out, grad),) = seen
    assert inp.tolist() == [1.0, 2.0, -1.0, 8.0]
    assert out.tolist() == [1.0, 2.0, 0.0, 8.0]
    assert grad.tolist() == [2.0, -3.0, 4.0, 5.0]
    assert sub.rule is tenfold


def test_smooth_activations_are_reported_and_left_alone():
    model = nn.Sequential(
        nn.Linear(3, 3), nn.SiLU(), nn.GELU(), nn.Sigmoid(), nn.Tanh(), nn.Hardswish()
    )
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    (plain,) = torch.autograd.grad(model(x).sum(), x)
    with substitute_activation_backward(model, "guided") as sub:
        (guided,) = torch.autograd.grad(model(x).sum(), x)
    assert torch.equal(guided, plain)
    assert sub.uncovered == Counter(silu=1, gelu=1, sigmoid=1, tanh=1, hardswish=1)
    assert sub.substituted == Counter()


def test_clamps_that_are_not_rectifiers_are_left_alone():
    model = nn.Identity()
    x = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    with substitute_activation_backward(model, "deconv") as sub:
        torch.arange(-2, 2).clamp(min=0)  # integer indices
        (x.clamp(0, 1) * -1).sum().backward()  # a clamp with a max
    assert sub.substituted == Counter()
    assert x.grad.tolist() == [0.0, -1.0, 0.0]


def test_unknown_rule_is_refused():
    with (
        pytest.raises(ValueError, match="guided"),
        substitute_activation_backward(nn.ReLU(), "smoothgrad"),
    ):
        pass


# ---------------------------------------------------------------------------------------------
# substitute_activation_backward: torchvision models (random weights)


def images(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def input_gradient(model, x, target, rule=None):
    """d logit[target] / d x, under `rule` when one is given."""
    x = x.clone().requires_grad_()
    rows = torch.arange(len(x))
    if rule is None:
        return torch.autograd.grad(model(x)[rows, target].sum(), x)[0], None
    with substitute_activation_backward(model, rule) as sub:
        grad = torch.autograd.grad(model(x)[rows, target].sum(), x)[0]
    return grad, sub


# ResNet-18 calls its 9 in-place ReLU modules 17 times (each BasicBlock reuses its own twice).
@quiet_captum
@pytest.mark.parametrize("name,relu_calls", [("alexnet", 7), ("resnet18", 17)])
def test_matches_captum_where_captum_is_right(name, relu_calls):
    model, x, target = make(name), images(2), torch.tensor([3, 7])
    plain, _ = input_gradient(model, x, target)
    for rule, captum_cls in (("guided", GuidedBackprop), ("deconv", Deconvolution)):
        ours, sub = input_gradient(model, x, target, rule)
        theirs = captum_cls(model).attribute(x, target=target)
        assert norm_close(ours, theirs), rule
        assert not norm_close(ours, plain, 1e-2), rule
        assert sub.substituted == Counter(relu=relu_calls)
    assert hook_count(model) == 0


@pytest.mark.slow
@quiet_captum
@pytest.mark.parametrize(
    "name,kind,activation",
    [
        ("googlenet", "relu", BasicConv2d),  # ends in F.relu
        ("mobilenet_v2", "relu6", nn.ReLU6),
    ],
)
def test_covers_functional_relu_and_relu6_where_captum_does_not(
    monkeypatch, name, kind, activation
):
    model, x, target = make(name), images(1), torch.tensor([5])
    calls = sum(isinstance(m, activation) for m in model.modules())  # each runs once
    plain, _ = input_gradient(model, x, target)
    captum = GuidedBackprop(model).attribute(x, target=target)
    assert norm_close(captum, plain)  # the gap: captum only hooks nn.ReLU modules
    for rule in ("guided", "deconv"):
        ours, sub = input_gradient(model, x, target, rule)
        assert sub.substituted == Counter({kind: calls})
        assert not norm_close(ours, plain, 1e-2)
        with monkeypatch.context() as patch:
            hand_swapped(patch, rule)
            reference, _ = input_gradient(model, x, target)
        assert norm_close(ours, reference), rule


# ---------------------------------------------------------------------------------------------
# nothing leaks when the forward (or backward) raises


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        self.relu(self.bn(self.conv(x)))
        raise ValueError("boom")


CONTEXTS = {
    "preserved_state": lambda m: preserved_state(m),
    "capture": lambda m: capture(m, ["conv", "relu"]),
    "capture-grad-attached": lambda m: capture(m, ["conv", "relu"], gradients=True, detach=False),
    "capture-stop-early": lambda m: capture(m, ["conv", "head"], stop_early=True),
    "guided": lambda m: substitute_activation_backward(m, "guided"),
    "deconv": lambda m: substitute_activation_backward(m, "deconv"),
    "callable": lambda m: substitute_activation_backward(m, lambda i, o, g: g),
}


def mixed_state(model: nn.Module):
    model.train()
    model.bn.eval()
    model.conv.weight.requires_grad_(False)
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


@pytest.mark.parametrize("name", list(CONTEXTS))
def test_no_leak_when_the_forward_raises(name):
    model = Exploding()
    before = mixed_state(model)
    with pytest.raises(ValueError, match="boom"), CONTEXTS[name](model):
        model.eval().requires_grad_(True)  # what an analysis might do inside
        model(torch.ones(1, 1, 2, 2))
    assert hook_count(model) == 0
    assert mode_stack() == []
    assert (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
    ) == before


def test_no_leak_from_nested_contexts_or_module_hooks():
    model = Exploding()
    before = mixed_state(model)
    with (
        pytest.raises(ValueError, match="boom"),
        substitute_activation_backward(model, "guided"),
        capture(model, ["relu", "head"], stop_early=True),
        module_hooks({"conv": model.conv}, pre=lambda *a: None, post=lambda *a: None),
    ):
        model(torch.ones(1, 1, 2, 2))
    assert hook_count(model) == 0 and mode_stack() == []
    assert (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
    ) == before


def test_an_error_in_a_rule_during_backward_propagates():
    def broken(inp, out, grad):
        raise RuntimeError("rule failed")

    model = TwoLayer(nn.ReLU())
    with (
        pytest.raises(RuntimeError, match="rule failed"),
        substitute_activation_backward(model, broken),
    ):
        model(X2.clone().requires_grad_()).sum().backward()
    assert mode_stack() == []
