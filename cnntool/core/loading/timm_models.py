"""timm (optional: `pip install 'cnntool[timm]'`): `timm:NAME` specs and timm's preprocessing.

A `timm:NAME` spec is `timm.create_model(NAME, pretrained=False, num_classes=…)`: random
weights unless `--weights` gives a local file. Nothing is downloaded: `pretrained` is always
False, and HF_HUB_OFFLINE is set before timm (and so huggingface_hub) is first imported.

Any timm model (also one built by user code, `timm.models:resnet18`) carries a pretrained_cfg;
`timm.data.resolve_data_config` turns it into timm's own eval preprocessing (input size,
interpolation, mean/std, crop_pct), which preprocessing_sources.py ranks as source 5.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

from cnntool.errors import ModelLoadError, unknown_name

INSTALL_HINT = "pip install 'cnntool[timm]'"


def timm_available() -> bool:
    """Whether timm is installed (found without importing it)."""
    return importlib.util.find_spec("timm") is not None


def timm_version() -> str | None:
    if not timm_available():
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("timm")
    except PackageNotFoundError:
        return "unknown version"


def _timm():
    if not timm_available():
        raise ModelLoadError(f"timm models need the optional package timm ({INSTALL_HINT})")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub reads it
    import timm

    return timm


def create_timm_model(
    name: str,
    num_classes: int | None = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
    **model_args: Any,
):
    """timm's architecture `name`, randomly initialized (never downloaded); `model_args` are
    passed on (timm's own `model_args` of a saved config, train.py's in_chans…)."""
    timm = _timm()
    if not timm.is_model(name):
        raise unknown_name(
            "timm model",
            name,
            timm.list_models(),
            hint="`python -c 'import timm; print(timm.list_models())'` lists them",
        )
    kwargs: dict[str, Any] = {**model_args, "pretrained": False}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if pretrained_cfg_overlay:
        kwargs["pretrained_cfg_overlay"] = dict(pretrained_cfg_overlay)
    try:
        return timm.create_model(name, **kwargs)
    except Exception as exc:
        raise ModelLoadError(
            f"timm could not build {name}: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from exc


def is_timm_model(module) -> bool:
    """A model built by timm (it carries a pretrained_cfg dict)."""
    return isinstance(getattr(module, "pretrained_cfg", None), Mapping) and timm_available()


def timm_preprocessing(module) -> dict | None:
    """timm's eval preprocessing of `module` as a schema dict (core/preprocessing.py), from its
    pretrained_cfg through timm.data.resolve_data_config; None for a non-timm module."""
    if not is_timm_model(module):
        return None
    _timm()
    from timm.data import resolve_data_config

    from cnntool.core.loading.timm_config import schema_of

    return schema_of(resolve_data_config({}, model=module))


def timm_crop_mode(module) -> str:
    """'center' (what we reproduce), 'squash' (reproduced too: each side resized on its own),
    or 'border' (approximated by a center crop)."""
    return str((getattr(module, "pretrained_cfg", None) or {}).get("crop_mode") or "center")
