"""What a targeted attack aims at: a class given by index or name, or each image's least-likely
class (Kurakin et al.'s "iterative least-likely class" method)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cnntool.core.class_indices import class_index
from cnntool.errors import CnnToolError

LEAST_LIKELY = "least-likely"
Target = int | str  # a class index, or LEAST_LIKELY


def resolve_target(spec: str | int, class_names: Sequence[str] | None) -> Target:
    """'least-likely', a class index ('388') or a class name ('giant panda') -> a Target."""
    text = str(spec).strip()
    if text == LEAST_LIKELY:
        return LEAST_LIKELY
    return class_index(text, class_names)


def target_classes(target: Target, clean_logits: Tensor) -> Tensor:
    """The target class of every image in a batch, from the clean logits (N, classes)."""
    if target == LEAST_LIKELY:
        return clean_logits.argmin(dim=1)
    if target >= clean_logits.shape[1]:
        raise CnnToolError(
            f"target class {target} is out of range: the model has {clean_logits.shape[1]} classes"
        )
    return torch.full(
        (len(clean_logits),), int(target), dtype=torch.long, device=clean_logits.device
    )
