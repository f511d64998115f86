"""A class named on the command line: by index ("207") or by name ("golden retriever")."""

from __future__ import annotations

from collections.abc import Sequence

from cnntool.errors import CnnToolError, unknown_name


def class_index(
    spec: str | int, class_names: Sequence[str] | None, num_classes: int | None = None
) -> int:
    """The class index for `spec`: a digit string is an index (for MNIST, whose class names are
    the digits, both readings agree); a name is matched case-insensitively, close names are
    suggested."""
    text = str(spec).strip()
    count = num_classes if num_classes is not None else (len(class_names) if class_names else None)
    if text.lstrip("-").isdigit():
        index = int(text)
        if index < 0 or (count is not None and index >= count):
            span = f"0 to {count - 1}" if count else "0 or more"
            raise CnnToolError(f"class {index} is out of range; the model's classes are {span}")
        return index
    if class_names is None:
        raise CnnToolError(f"the model has no class names, so give the class '{text}' as an index")
    lowered = [name.lower() for name in class_names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise unknown_name("class", text, class_names)
