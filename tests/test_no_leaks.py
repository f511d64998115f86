"""Every library entry point leaves the model as it found it, also when the forward raises."""

import pytest
import torch
from torch import nn
from torch.overrides import _get_current_function_mode_stack

from cnntool.core.data import BatchStream, DataSet
from cnntool.core.hooks import capture, hook_count, substitute_activation_backward
from cnntool.core.loading.models import LoadedModel
from cnntool.core.preprocessing import Preprocessing
from cnntool.tasks.predict import predict
from cnntool.tasks.profile import profile

PREP = Preprocessing(crop=(8, 8), resize=8, mean=(0.0,), std=(1.0,), channels=1)


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom in the middle of the forward")


def broken_model() -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), Boom(), nn.Flatten(), nn.Linear(2, 2)
    )
    model.train()
    model[0].weight.requires_grad_(False)
    return model


def _dataset(n=3) -> DataSet:
    import numpy as np

    return DataSet(
        name="zeros",
        paths=[f"z/{i}" for i in range(n)],
        labels=[None] * n,
        arrays=np.zeros((n, 8, 8), dtype=np.uint8),
    )


ENTRY_POINTS = {
    "predict": lambda m: list(
        predict(
            LoadedModel(m, "broken", PREP, None, "test", torch.device("cpu")),
            BatchStream(_dataset(), PREP, batch_size=2),
        )
    ),
    "profile": lambda m: profile(m, input_shape=(1, 8, 8), device="cpu"),
    "capture": lambda m: _within(capture(m, ["0", "1"], gradients=True, detach=False), m),
    "capture_stop_early": lambda m: _within(capture(m, ["4"], stop_early=True), m),
    "guided": lambda m: _within(substitute_activation_backward(m, "guided"), m),
    "deconv": lambda m: _within(substitute_activation_backward(m, "deconv"), m),
}


def _within(context, model):
    with context:
        model(torch.zeros(1, 1, 8, 8, requires_grad=True))


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_entry_point_leaves_no_trace_when_the_forward_raises(entry):
    model = broken_model()
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(Exception, match="boom"):
        ENTRY_POINTS[entry](model)
    assert hook_count(model) == 0
    assert len(_get_current_function_mode_stack()) == 0
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_entry_point_leaves_no_trace_on_success(entry):
    model = broken_model()
    model[2] = nn.AdaptiveAvgPool2d(1)  # the same model, mended
    model.eval()
    ENTRY_POINTS[entry](model)
    assert hook_count(model) == 0
    assert len(_get_current_function_mode_stack()) == 0
    assert not any(m.training for m in model.modules())
