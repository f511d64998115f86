"""Hugging Face transformers image classifiers (optional: `pip install 'cnntool[hf]'`).

A folder written by `model.save_pretrained(folder)` (config.json naming its `architectures`, and
model.safetensors or pytorch_model.bin) is MODEL. transformers builds it from the folder alone
(`local_files_only`, HF_HUB_OFFLINE: nothing is downloaded); code shipped in the folder
(config.json's `auto_map`) runs only with --trust-code.

- Output: a transformers model returns a ModelOutput, and every analysis needs the logits
  tensor. `returning_logits` gives the loaded module (also one built by user code) a forward
  that returns `.logits`: a subclass of its own class, so every module path and parameter name
  stays what transformers calls it, and hooks, BatchNorm folding, attacks and profile all see
  a plain tensor.
- Feed: `preprocessor_config.json` (from `image_processor.save_pretrained(folder)`, or given
  with --preprocessing) is mapped field by field onto cnntool's preprocessing
  (`processor_feed`); a value it does not set is the processor class's default, and each
  field's origin is said on stderr. What cnntool cannot reproduce exactly is a warning.
- Class names: config.json's `id2label` (transformers' placeholders LABEL_0… are no names).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cnntool.core.loading.class_names import config_class_names
from cnntool.core.loading.hf_processor import (  # noqa: F401 - re-exported
    INSTALL_HINT,
    PROCESSOR_FILE,
    Feed,
    exact_resize_supported,
    is_processor_config,
    processor_feed,
    transformers_available,
)
from cnntool.core.loading.preprocessing_sources import Source
from cnntool.errors import ModelLoadError, UntrustedCodeError, first_line

if TYPE_CHECKING:
    from torch import nn

ModuleT = TypeVar("ModuleT", bound="nn.Module")


# --- the folder and the model ------------------------------------------------------------------
def transformers_config(folder: Path) -> dict | None:
    """config.json of a `save_pretrained` folder (it names `architectures` or a `model_type`;
    timm's hub folders name an `architecture` instead); None for any other folder."""
    path = Path(folder) / "config.json"
    if not Path(folder).is_dir() or not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict) or "architecture" in config:
        return None
    names = config.get("architectures")
    named = isinstance(names, list) and any(isinstance(n, str) for n in names)
    return config if named or isinstance(config.get("model_type"), str) else None


def _transformers(folder: Path, what: str):
    if not transformers_available():
        raise ModelLoadError(
            f"{folder} is a Hugging Face transformers model ({what}); reading it needs the "
            f"optional package transformers ({INSTALL_HINT})"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub reads it
    import transformers

    return transformers


@dataclass
class HFModel:
    """A transformers classifier read from its folder, with what the folder says about it."""

    module: Any
    name: str  # its class, e.g. ResNetForImageClassification
    sources: list[Source]  # preprocessing, lowest rank first
    class_names: list[tuple[str, list[str]]]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def load_folder(folder: Path, config: Mapping[str, Any], trust_code: bool) -> HFModel:
    """The classifier in a `save_pretrained` folder, returning logits, with its feed and names."""
    folder = Path(folder)
    names = [n for n in config.get("architectures") or [] if isinstance(n, str)]
    name = names[0] if names else f"a {config.get('model_type')} image classifier"
    transformers = _transformers(folder, name)
    kwargs: dict[str, Any] = {"local_files_only": True, _dtype_argument(transformers): "float32"}
    # only a model_type: transformers' auto class picks its image classifier
    model_class = (
        getattr(transformers, name, None) if names else transformers.AutoModelForImageClassification
    )
    if model_class is None:
        if not config.get("auto_map"):
            raise ModelLoadError(
                f"{folder}/config.json names {name}, which transformers "
                f"{transformers.__version__} does not have (a newer transformers may)"
            )
        if not trust_code:
            raise UntrustedCodeError(
                f"{folder} needs the Python code shipped in it ({name}, config.json's auto_map), "
                "and running it can do anything; pass --trust-code only if you trust this folder"
            )
        model_class = transformers.AutoModelForImageClassification
        kwargs["trust_remote_code"] = True
    if names and "ForImageClassification" not in name:
        raise ModelLoadError(
            f"{folder} holds a {name}, which has no classification head; cnntool needs an "
            "image classifier (a …ForImageClassification model)"
        )
    module, info = _from_pretrained(transformers, model_class, folder, kwargs)
    name = type(module).__name__
    missing = list(info.get("missing_keys") or [])
    wrong = list(info.get("mismatched_keys") or [])
    if missing or wrong:
        shown = "; ".join(map(str, (missing + wrong)[:3]))
        raise ModelLoadError(
            f"the weights in {folder} do not fit {name}: {len(missing)} missing and {len(wrong)} "
            f"wrongly shaped ({shown})"
        )
    module.eval()
    loaded = HFModel(module=module, name=name, sources=[], class_names=[])
    note = returning_logits(module)
    if note is not None:
        loaded.notes.append(note)
    _feed_of_folder(loaded, folder, config)
    labels = config_class_names(config, f"{folder}/config.json")
    if labels and not all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
        loaded.class_names.append((f"{folder}/config.json's id2label", labels))
    return loaded


def _dtype_argument(transformers) -> str:
    """from_pretrained's dtype keyword: `dtype` since transformers 4.56, `torch_dtype` before."""
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _from_pretrained(transformers, model_class, folder: Path, kwargs: dict):
    """from_pretrained with transformers' progress bar and info lines kept off stderr."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        return model_class.from_pretrained(str(folder), output_loading_info=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises anything for a bad folder
        raise ModelLoadError(
            f"transformers could not load {folder}: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def is_transformers_model(module) -> bool:
    """A transformers PreTrainedModel (found by its class hierarchy, without importing it)."""
    return any(
        cls.__name__ == "PreTrainedModel" and cls.__module__.startswith("transformers")
        for cls in type(module).__mro__
    )


def returning_logits(module) -> str | None:
    """Give a transformers model a forward that returns its logits tensor (in place), and say
    so; None when `module` is not one, or already returns a tensor."""
    if not is_transformers_model(module) or getattr(module, "_cnntool_logits", False):
        return None
    original = type(module)
    # functools.cache takes a class (hashable), though mypy says not: mypy#11470
    module.__class__ = _logits_class(original)  # type: ignore[arg-type]
    module._cnntool_logits = True
    return f"{original.__name__} returns a ModelOutput: cnntool uses its .logits"


@functools.cache
def _logits_class(base: type[ModuleT]) -> type[ModuleT]:
    """`base` with a forward that returns `.logits` (or the first element of a tuple return)."""

    def forward(self, pixel_values, *args, **kwargs):
        output = base.forward(self, pixel_values, *args, **kwargs)
        logits = getattr(output, "logits", None)
        if logits is None and isinstance(output, (tuple, list)):
            logits = output[0]
        return logits

    doc = f"{base.__name__}, returning its logits tensor instead of a ModelOutput (cnntool)."
    return type(
        base.__name__, (base,), {"forward": forward, "__doc__": doc, "__module__": __name__}
    )


def _feed_of_folder(loaded: HFModel, folder: Path, config: Mapping[str, Any]) -> None:
    """The sources of the folder's feed: config.json's image size and channels, then
    preprocessor_config.json."""
    channels = config.get("num_channels") if isinstance(config.get("num_channels"), int) else None
    image_size = config.get("image_size")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    elif isinstance(image_size, (list, tuple)) and len(image_size) == 2:
        image_size = tuple(int(v) for v in image_size)
    else:
        image_size = None
    if image_size is not None:
        loaded.sources.append(
            Source.of(
                f"{folder}/config.json's image_size",
                {"input_size": [channels or 3, *image_size]},
            )
        )
    path = folder / PROCESSOR_FILE
    if not path.is_file():
        loaded.notes.append(
            f"{folder} has no {PROCESSOR_FILE} (image_processor.save_pretrained writes it), so "
            "its feed is not known"
        )
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    feed = processor_feed(data, str(path), channels=channels, image_size=image_size)
    loaded.sources.append(Source.of(str(path), feed.fields))
    loaded.notes.append(feed.line(str(path)))
    loaded.warnings.extend(feed.approximations)
