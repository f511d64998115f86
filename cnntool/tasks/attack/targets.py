"""What a targeted attack aims at: a class given by index or name, or each image's least-likely
class (Kurakin et al.'s "iterative least-likely class" method)."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from cnntool.errors import CnnToolError, unknown_name

LEAST_LIKELY = "least-likely"
Target = Union[int, str]  # a class index, or LEAST_LIKELY


def resolve_target(spec: str | int, class_names: Sequence[str] | None) -> Target:
    """'least-likely', a class index ('388') or a class name ('giant panda') -> a Target.

    A digit string is an index; for MNIST the class names are the digits, so both agree.
    """
    text = str(spec).strip()
    if text == LEAST_LIKELY:
        return LEAST_LIKELY
    if text.lstrip("-").isdigit():
        index = int(text)
        if index < 0 or (class_names is not None and index >= len(class_names)):
            count = f"0–{len(class_names) - 1}" if class_names else "≥ 0"
            raise CnnToolError(f"target class {index} is out of range (the model's classes are {count})")
        return index
    if class_names is None:
        raise CnnToolError(f"the model has no class names, so target '{text}' must be a class index "
                           f"or '{LEAST_LIKELY}'")
    lowered = [name.lower() for name in class_names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise unknown_name("target class", text, class_names,
                       hint=f"give a class index, a class name or '{LEAST_LIKELY}'")


def target_classes(target: Target, clean_logits: Tensor) -> Tensor:
    """The target class of every image in a batch, from the clean logits (N, classes)."""
    if target == LEAST_LIKELY:
        return clean_logits.argmin(dim=1)
    if target >= clean_logits.shape[1]:
        raise CnnToolError(f"target class {target} is out of range: the model has "
                           f"{clean_logits.shape[1]} classes")
    return torch.full((len(clean_logits),), int(target), dtype=torch.long, device=clean_logits.device)
