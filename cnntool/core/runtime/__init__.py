"""How a scan runs the model: faster than a naive `model(x)`, with the same answers in fp32.

- prepare: `prepare_for_scan(module, device, ...)` -> `PreparedModel` (in place, reversible):
  channels-last where convolutions dominate, inference mode, precision, optional BN folding.
- layout: the channels-last rule.
- precision: `--precision fp32|tf32|bf16|fp16` as autocast and TF32 switches.
- folding: BatchNorm folded into the convolution before it.
"""

from cnntool.core.runtime.folding import fold_batchnorm
from cnntool.core.runtime.precision import PRECISIONS, PrecisionPlan, precision_plan
from cnntool.core.runtime.prepare import PreparedModel, prepare_for_scan

__all__ = [
    "PRECISIONS",
    "PrecisionPlan",
    "PreparedModel",
    "fold_batchnorm",
    "precision_plan",
    "prepare_for_scan",
]
