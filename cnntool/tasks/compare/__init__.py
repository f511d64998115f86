"""`compare`: how similar the representations of two models (or of one model's layers) are, as
centered kernel alignment (CKA; Kornblith et al. 2019) between every pair of chosen layers, over
a dataset, in minibatches (Nguyen et al. 2021).

- cka.py: the arithmetic (Gram matrices, the unbiased HSIC₁ of Song et al. 2012, sums → CKA);
- layers.py: the default layers, and how a layer's output becomes one row per image (--pool);
- minibatches.py: the minibatches, the scan feeding both models the same images, the merge
  over ranks.
"""

from cnntool.tasks.compare.cka import KERNELS, HsicSums, MinibatchHsic, minibatch_hsic
from cnntool.tasks.compare.layers import LayerRows, default_layers, layer_rows
from cnntool.tasks.compare.minibatches import (
    CkaResult,
    CompareSettings,
    Minibatches,
    compare,
    plan_layers,
    plan_sides,
    second_session,
)

__all__ = [
    "KERNELS",
    "CkaResult",
    "CompareSettings",
    "HsicSums",
    "LayerRows",
    "MinibatchHsic",
    "Minibatches",
    "compare",
    "default_layers",
    "layer_rows",
    "minibatch_hsic",
    "plan_layers",
    "plan_sides",
    "second_session",
]
