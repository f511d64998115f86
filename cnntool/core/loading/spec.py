"""What kind of thing a MODEL string (or an architecture name) names, decided once.

A MODEL argument is, in this order: a built-in name, `timm:NAME`, user code (`FILE.py:NAME`,
`package.module:NAME`), a weight file or folder (an existing path, or a weight suffix), a
torchvision classification architecture. An architecture name (`--arch`, a timm folder's
config.json) is the same list without the weight file. models.py and architectures.py branch
on `ModelSpec.kind` instead of asking the string again.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from pathlib import Path

from cnntool.core.loading.checkpoints import WEIGHT_SUFFIXES
from cnntool.errors import unknown_name

TIMM_PREFIX = "timm:"


class SpecKind(enum.Enum):
    BUILTIN = "built-in"
    TIMM = "timm"
    CODE = "user code"
    WEIGHT_FILE = "weight file"
    TORCHVISION = "torchvision"


@dataclass(frozen=True)
class ModelSpec:
    """A MODEL string and its kind. `name`: the timm name without `timm:`, else the text."""

    text: str
    kind: SpecKind

    @property
    def name(self) -> str:
        return self.text[len(TIMM_PREFIX) :] if self.kind is SpecKind.TIMM else self.text

    @property
    def path(self) -> Path:
        return Path(self.text)

    def __str__(self) -> str:
        return self.text


def names_weight_file(text: str) -> bool:
    """The string is a path to weights: an existing file or folder, or a weight suffix."""
    path = Path(text)
    return path.suffix.lower() in WEIGHT_SUFFIXES or path.is_file() or path.is_dir()


@functools.lru_cache(maxsize=1)
def torchvision_classifiers() -> tuple[str, ...]:
    """Names of torchvision's classification architectures (not detection/segmentation/video)."""
    import torchvision.models

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def is_code_spec(text: str) -> bool:
    return ":" in text and not text.startswith(TIMM_PREFIX) and not Path(text).exists()


def _kind(text: str, *, weight_files: bool) -> SpecKind | None:
    from cnntool.core.loading.zoo import BUILTIN_MODELS

    if text in BUILTIN_MODELS:
        return SpecKind.BUILTIN
    if text.startswith(TIMM_PREFIX):
        return SpecKind.TIMM
    if is_code_spec(text):
        return SpecKind.CODE
    if weight_files and names_weight_file(text):
        return SpecKind.WEIGHT_FILE
    if text in torchvision_classifiers():
        return SpecKind.TORCHVISION
    return None


def _known_names() -> list[str]:
    from cnntool.core.loading.zoo import BUILTIN_MODELS

    return [*BUILTIN_MODELS, *torchvision_classifiers()]


def model_spec(text: str) -> ModelSpec:
    """Classify a MODEL argument; an unknown name is one sentence with close names."""
    kind = _kind(text, weight_files=True)
    if kind is None:
        raise unknown_name(
            "model",
            text,
            _known_names(),
            hint="`cnntool models` lists them; a file path must exist",
        )
    return ModelSpec(text, kind)


def architecture_spec(text: str) -> ModelSpec:
    """Classify an architecture name (`--arch`, config.json): never a weight file."""
    kind = _kind(text, weight_files=False)
    if kind is None:
        raise unknown_name(
            "architecture",
            text,
            _known_names(),
            hint="`cnntool models` lists them; timm:NAME and FILE.py:NAME work too",
        )
    return ModelSpec(text, kind)
