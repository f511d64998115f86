"""The built-in MNIST LeNet-5 with planted pathologies, for `cnntool diagnose` to find.

    cnntool diagnose lenet5-mnist mnist-5k --limit 1000 -o diag-lenet/
    cnntool diagnose examples/broken_lenet.py:broken_lenet5 --trust-code mnist-5k --limit 1000 \\
        -o diag-broken/

Each factory loads the trained weights (shipped with the built-in `lenet5-mnist`) and breaks one
layer the way training goes wrong:
- `dead_conv2`: half of conv2's biases are very negative, so those units never fire (a too large
  learning rate or a bad initialization leaves ReLUs dead);
- `duplicated_conv1`: conv1's filters 16–31 are copies of 0–15 (a symmetric initialization that
  training never broke): the copies' feature maps are identical;
- `noisy_conv2`: conv2's filters are replaced by white noise of the same norms (an untrained or
  diverged layer);
- `broken_lenet5`: dead conv2 units and duplicated conv1 filters together.
The network still runs and still classifies many digits: nothing but a look inside shows it.
"""

import torch

from cnntool.core.loading.zoo import load_builtin

DEAD_UNITS = tuple(range(0, 64, 2))  # conv2 channels whose bias is sunk
SUNK_BIAS = -100.0  # far below anything 3×3×32 weights can add on [0, 1] digits


def dead_conv2(model=None):
    model = model or load_builtin("lenet5-mnist")
    with torch.no_grad():
        model.conv2.bias[list(DEAD_UNITS)] = SUNK_BIAS
    return model


def duplicated_conv1(model=None):
    model = model or load_builtin("lenet5-mnist")
    with torch.no_grad():
        model.conv1.weight[16:32] = model.conv1.weight[0:16].clone()
        model.conv1.bias[16:32] = model.conv1.bias[0:16].clone()
    return model


def noisy_conv2(model=None, seed: int = 0):
    model = model or load_builtin("lenet5-mnist")
    weight = model.conv2.weight
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(weight.shape, generator=generator)
    norms = weight.detach().flatten(1).norm(dim=1)
    noise *= (norms / noise.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
    with torch.no_grad():
        weight.copy_(noise)
    return model


def broken_lenet5():
    return duplicated_conv1(dead_conv2())
