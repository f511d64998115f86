"""Class names in the forms people store them.

- `--classes FILE`: one name per line, a JSON list, a JSON {name: index} dict (torchvision's
  `class_to_idx`) or a JSON {index: name} dict (`idx_to_class`, HF's `id2label`);
- a checkpoint dict: `class_names`, `classes`, `categories`, `class_to_idx`, `idx_to_class`,
  `id2label`, and the same inside Lightning's `hyper_parameters`;
- an HF-style `config.json`: `id2label`, or timm's `label_names`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cnntool.errors import CnnToolError

# Checked in this order; the first that holds names wins.
CHECKPOINT_KEYS = (
    "class_names",
    "classes",
    "categories",
    "labels",
    "class_to_idx",
    "idx_to_class",
    "id2label",
    "label_names",
)


class ClassNamesError(CnnToolError):
    """Class names that cannot be read (a bad file, gaps in the indices)."""


def read_class_names_file(path: str | Path) -> list[str]:
    """Class names from a `--classes` file (text, JSON list or JSON dict), index order."""
    path = Path(path)
    if not path.is_file():
        raise ClassNamesError(f"--classes file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClassNamesError(f"cannot read --classes file {path}: {exc}") from None
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ClassNamesError(
                f"--classes file {path} looks like JSON but is not valid "
                f"({exc.msg} at line {exc.lineno})"
            ) from None
        names = names_from(value, f"--classes file {path}")
        if names is None:
            raise ClassNamesError(
                f"--classes file {path} holds no class names (a JSON list of "
                "names, or a {name: index} dict)"
            )
        return names
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ClassNamesError(f"--classes file {path} is empty")
    return names


def names_from(value: Any, what: str) -> list[str] | None:
    """Names in index order from a list of names, {name: index} or {index: name}; None when
    `value` is not one of those shapes (a count, a tensor…). Gaps or repeats in the indices
    raise, since every later name would be off by one."""
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            return list(value)
        return None
    if not isinstance(value, Mapping) or not value:
        return None
    if all(isinstance(k, str) for k in value) and all(_is_index(v) for v in value.values()):
        by_index = {int(v): k for k, v in value.items()}  # {name: index}
        if len(by_index) != len(value):
            raise ClassNamesError(f"{what} gives two classes the same index")
    elif all(_is_index(k) for k in value) and all(isinstance(v, str) for v in value.values()):
        by_index = {int(k): v for k, v in value.items()}  # {index: name}, JSON keys are strings
    else:
        return None
    expected = list(range(len(by_index)))
    if sorted(by_index) != expected:
        missing = sorted(set(expected) - set(by_index))
        detail = (
            f"index {missing[0]} is missing" if missing else f"indices go up to {max(by_index)}"
        )
        raise ClassNamesError(
            f"{what} does not number its {len(by_index)} classes 0 to "
            f"{len(by_index) - 1} ({detail})"
        )
    return [by_index[i] for i in expected]


def _is_index(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and value.isdigit()


def stored_class_names(checkpoint: Mapping[str, Any], what: str) -> tuple[list[str], str] | None:
    """(names, 'the checkpoint's class_to_idx') from a checkpoint dict, Lightning's
    `hyper_parameters` included; None when it stores none."""
    places = [(checkpoint, "")]
    hyper = checkpoint.get("hyper_parameters") or checkpoint.get("hparams")
    if isinstance(hyper, Mapping):
        places.append((hyper, "hyper_parameters."))
    for place, prefix in places:
        for key in CHECKPOINT_KEYS:
            names = names_from(place.get(key), f"{what}'s {prefix}{key}")
            if names is not None:
                return names, f"{prefix}{key}"
    return None


def config_class_names(config: Mapping[str, Any], what: str) -> list[str] | None:
    """Names from an HF-style config.json: `id2label` (transformers), `label_names` (timm)."""
    for key in ("id2label", "label_names", "class_names", "classes"):
        names = names_from(config.get(key), f"{what}'s {key}")
        if names is not None:
            return names
    return None
