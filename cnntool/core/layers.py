"""Layer names: module paths (`features.0`, `layer4.1.conv2`) and familiar aliases.

Aliases from the literature:
- any classifier: `logits` (the last Linear) and `penultimate` (the module whose output feeds it);
- AlexNet: `conv1`…`conv5`, `pool1`, `pool2`, `pool5`, `fc6`, `fc7`, `fc8` (the Conv2d/MaxPool2d/
  Linear modules, as Caffe's blobs before the in-place ReLU) and `relu1`…`relu7` after them;
- VGG: `convB_N` per block (`conv5_3`), `convB` for a block's last convolution, `pool1`…`pool5`,
  `fc6`, `fc7`, `fc8`, `relu6`, `relu7`.
"""

from __future__ import annotations

from typing import Any

from cnntool.core.loading.exported import refuse_layers
from cnntool.errors import unknown_name

_SKIPPED_BEFORE_LOGITS = ("Dropout", "Flatten", "Identity")


def named_layers(model) -> dict[str, Any]:
    """Every submodule by its module path (the root excluded), in registration order. A
    TorchScript model's layers cannot be hooked: that is one sentence here, before any lookup
    can fail in a misleading way (core/exported.py)."""
    refuse_layers(model)
    return {name: module for name, module in model.named_modules() if name}


def layer_aliases(model) -> dict[str, str]:
    """alias -> module path for this model (empty when none apply)."""
    aliases = _classic_aliases(model)
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    linear_positions = [i for i, (_, m) in enumerate(leaves) if type(m).__name__ == "Linear"]
    if linear_positions:
        last = linear_positions[-1]
        aliases.setdefault("logits", leaves[last][0])
        for name, module in reversed(leaves[:last]):
            if type(module).__name__ not in _SKIPPED_BEFORE_LOGITS:
                aliases.setdefault("penultimate", name)
                break
    layers = {name for name, _ in model.named_modules() if name}  # (no refusal: only names)
    # an alias never hides a real module path
    return {alias: path for alias, path in aliases.items() if alias not in layers}


def _classic_aliases(model) -> dict[str, str]:
    kind = type(model).__name__
    features = getattr(model, "features", None)
    classifier = getattr(model, "classifier", None)
    if kind not in ("AlexNet", "VGG") or features is None or classifier is None:
        return {}
    aliases: dict[str, str] = {}
    block, conv_in_block, conv_count, last_kind = 1, 0, 0, None
    for index, module in enumerate(features):
        path, name = f"features.{index}", type(module).__name__
        if name == "Conv2d":
            conv_count += 1
            conv_in_block += 1
            if kind == "AlexNet":
                aliases[f"conv{conv_count}"] = path
            else:
                aliases[f"conv{block}_{conv_in_block}"] = path
                aliases[f"conv{block}"] = path  # the block's last convolution wins
        elif name in ("ReLU", "ReLU6") and last_kind == "Conv2d":
            label = conv_count if kind == "AlexNet" else f"{block}_{conv_in_block}"
            aliases[f"relu{label}"] = path
        elif name == "MaxPool2d":
            aliases[f"pool{conv_count if kind == 'AlexNet' else block}"] = path
            block, conv_in_block = block + 1, 0
        last_kind = name
    fc = 6
    linear_paths = [
        f"classifier.{i}" for i, m in enumerate(classifier) if type(m).__name__ == "Linear"
    ]
    for i, module in enumerate(classifier):
        if type(module).__name__ == "Linear":
            aliases[f"fc{fc}"] = f"classifier.{i}"
            fc += 1
        elif (
            type(module).__name__ == "ReLU"
            and fc - 1 >= 6
            and f"classifier.{i - 1}" in linear_paths
        ):
            aliases[f"relu{fc - 1}"] = f"classifier.{i}"
    return aliases


def main_blocks(model) -> list[str]:
    """Children that are containers, of Sequential/ModuleList containers holding at least two
    of them, in registration order, at the shallowest depth where there are any (MobileNet's
    `features.N`, not the Sequentials inside each of them): a model's main blocks."""
    from torch import nn

    found = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Sequential, nn.ModuleList)):
            inner = [
                f"{name}.{child}" if name else child
                for child, sub in module.named_children()
                if list(sub.children())
            ]
            if len(inner) >= 2:
                found += inner
    if not found:
        return []
    shallowest = min(name.count(".") for name in found)
    return [name for name in found if name.count(".") == shallowest]


def resolve_layer(model, name: str) -> tuple[str, Any]:
    """(module path, module) for a path or alias; an unknown name gets close matches."""
    layers = named_layers(model)
    if name in layers:
        return name, layers[name]
    aliases = layer_aliases(model)
    if name in aliases:
        return aliases[name], layers[aliases[name]]
    raise unknown_name(
        "layer",
        name,
        list(layers) + list(aliases),
        hint="`cnntool layers MODEL` lists every layer and alias",
    )
