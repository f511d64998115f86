"""The logits tensor of whatever a model's forward returned (a tensor, a tuple with auxiliary
heads, a dict, or a Hugging Face ModelOutput).

Its own module: the model loader and the exported-program wrapper both need it, and neither may
import the other.
"""

from __future__ import annotations

from collections.abc import Mapping


def main_output(output):
    """The logits of whatever a forward returned: a tensor, the first of a tuple/list (aux
    heads), `logits` of a dict or an object (HF style); None when there is no tensor."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output:
        return main_output(output[0])
    if isinstance(output, Mapping):
        value = output.get("logits", next(iter(output.values()), None))
        return main_output(value) if value is not None else None
    value = getattr(output, "logits", None)
    return value if isinstance(value, torch.Tensor) else None
