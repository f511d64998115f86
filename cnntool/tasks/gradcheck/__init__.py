"""Gradient checking: autograd's gradients against central finite differences in float64.

`gradcheck(model, input_shape, …)` checks a whole model's loss (every parameter tensor and the
input) or, with `per_layer=True`, every module alone on the activations it really sees, and
returns a `GradcheckResult` with one `TensorResult` per tensor. See runner.py for the modes and
numeric.py for how kinks and rounding noise are told apart from wrong gradients.
"""

from cnntool.tasks.gradcheck.results import (
    Check,
    GradcheckResult,
    Skipped,
    TensorResult,
    Tolerances,
)
from cnntool.tasks.gradcheck.runner import gradcheck

__all__ = ["Check", "GradcheckResult", "Skipped", "TensorResult", "Tolerances", "gradcheck"]
