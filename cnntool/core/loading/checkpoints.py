"""Reading weight files safely, and writing checkpoints that carry their preprocessing and class
names (fitting a state dict to an architecture is state_dicts.py's).

Safety: `torch.load(weights_only=True)` always. Anything that would unpickle arbitrary Python
objects (a whole pickled nn.Module) needs `trust_code=True`, because unpickling can run code.
GPU-saved tensors are mapped to the CPU while reading, so they load on a CPU-only machine.
A file is sniffed before torch reads it, so random bytes are "not a PyTorch checkpoint" rather
than a request for --trust-code, and torch's pickle warnings never reach stderr.

What a checkpoint may hold besides the weights (`read_checkpoint`):
- the weights under `state_dict`, `model_state_dict`, `model`, … or as the whole dict;
- EMA weights under `state_dict_ema`, `model_ema`, … (timm, Lightning EMA callbacks);
- class names (class_names.py), Lightning `hyper_parameters` included;
- a `preprocessing` entry in the JSON schema of core/preprocessing.py;
- for a `.safetensors` file, the last two as JSON strings in its metadata;
- for a folder, `model.safetensors` (or `pytorch_model.bin`) and `config.json` beside it; the
  same `config.json` when such a file is named on its own (timm's `save_for_hf` layout);
- timm train.py's `arch` and `args` (an argparse.Namespace: the one class beyond tensors and
  plain data that the safe loader is allowed to build here; core/timm_config.py reads them).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnntool.core.loading.class_names import config_class_names, names_from, stored_class_names
from cnntool.errors import ModelLoadError, UntrustedCodeError, first_line, shorten

WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".tar", ".pt2")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights", "module")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema_model", "ema")
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth")
FORMAT_VERSION = 1  # `cnntool_format` in what save_checkpoint writes
# A torch.save file from before the zip format starts with a pickled magic number.
_LEGACY_MAGIC = b"l\xfc\x9cF\xf9 j\xa8P\x19"


@dataclass
class Checkpoint:
    """What a weight file (or a model folder) holds, taken apart."""

    path: str
    state: dict | None = None  # the weights, tensors by key
    ema_state: dict | None = None  # EMA weights kept beside them
    ema_key: str | None = None
    module: Any = None  # a whole pickled nn.Module (read only with trust_code)
    class_names: list[str] | None = None
    class_names_from: str | None = None  # e.g. "class_to_idx", "config.json's id2label"
    preprocessing: Any = None  # the stored schema dict (or JSON text), as found
    config: dict | None = None  # config.json of a model folder (or beside its weights file)
    config_path: str | None = None
    train_args: dict | None = None  # timm train.py's args, as a dict
    arch: str | None = None  # timm train.py's `arch`
    notes: list[str] = field(default_factory=list)

    @property
    def classifier_width(self) -> int | None:
        return classifier_width(self.state)


# --- reading -------------------------------------------------------------------------------------


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a `code/` folder and `constants.pkl`."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.split("/", 1)[-1].startswith("code/") for n in names) and any(
        n.endswith("constants.pkl") for n in names
    )


def read_weights(path: str | Path, trust_code: bool = False) -> Any:
    """The object stored in a weight file, with every tensor on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weight file {path} does not exist")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)[0]
    return _torch_load(path, trust_code)


def _torch_load(path: Path, trust_code: bool) -> Any:
    import torch

    _sniff(path)
    try:
        with (
            warnings.catch_warnings(),  # e.g. "Detected pickle protocol 4 in the checkpoint"
            _namespace_allowed(),  # timm train.py's `args`
        ):
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # A torch.save file (sniffed above) that the safe unpickler refuses: it holds Python
        # objects, or uses pickle opcodes it does not know (protocol 4 framing).
        if not trust_code:
            what = (
                "contains pickled Python objects"
                if "global" in str(exc).lower()
                else "uses pickle features that the safe loader refuses"
            )
            raise UntrustedCodeError(
                f"{path} {what} ({_weights_only_reason(exc)}), and unpickling it fully can run "
                "arbitrary code; pass --trust-code only if you trust this file, or save a "
                "state_dict instead"
            ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, zipfile errors…
        raise ModelLoadError(
            f"cannot read {path}: it is truncated or corrupt ({_first_line(exc)})"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - unpickling runs the file's code: anything can fail
        raise ModelLoadError(f"cannot unpickle {path}: {_first_line(exc)}") from None


def _namespace_allowed():
    """A context in which the safe loader may build argparse.Namespace (plain attributes, no
    code): torch's safe_globals (torch 2.5), or its process-wide allow-list before that."""
    import contextlib

    import torch

    if hasattr(torch.serialization, "safe_globals"):
        return torch.serialization.safe_globals([argparse.Namespace])
    torch.serialization.add_safe_globals([argparse.Namespace])
    return contextlib.nullcontext()


def _sniff(path: Path) -> None:
    """Refuse what torch.save cannot have written, before torch tries to unpickle it."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        raise ModelLoadError(f"cannot read {path}: the file is empty")
    if zipfile.is_zipfile(path):
        return
    if head.startswith(b"PK\x03\x04"):
        raise ModelLoadError(f"cannot read {path}: it is a truncated or damaged zip archive")
    if head[:1] == b"\x80" and _LEGACY_MAGIC in head[:32]:
        return
    raise ModelLoadError(
        f"cannot read {path}: it is not a PyTorch checkpoint (neither a "
        "torch.save archive nor a safetensors file)"
    )


def _weights_only_reason(exc: BaseException) -> str:
    """The informative line of torch's long weights-only message ('Unsupported global: …')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("Unsupported", "Trying to", "Can only", "Could not")):
            return shorten(line, 160)
    return shorten(lines[0], 160) if lines else type(exc).__name__


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a .safetensors file."""
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError:
        raise ModelLoadError(
            "reading .safetensors files needs the package 'safetensors' (pip install safetensors)"
        ) from None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        return load_file(str(path), device="cpu"), metadata
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own and OS errors alike
        raise ModelLoadError(
            f"cannot read {path}: it is truncated or not a safetensors file ({_first_line(exc)})"
        ) from None


def load_torchscript(path: Path):
    import torch

    try:
        # TorchScript is deprecated upstream, but users have archives
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - the archive's own code may raise anything
        raise ModelLoadError(
            f"cannot load TorchScript archive {path}: {_first_line(exc)}"
        ) from None


def read_checkpoint(path: str | Path, trust_code: bool = False, *, _in_folder=False) -> Checkpoint:
    """A weight file or a model folder, taken apart (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, trust_code)
    if not path.is_file():
        raise ModelLoadError(f"weight file {path} does not exist")
    if path.suffix == ".safetensors":
        state, metadata = _read_safetensors(path)
        checkpoint = Checkpoint(str(path), state=state)
        _metadata_extras(checkpoint, metadata)
    else:
        checkpoint = _take_apart(path, _torch_load(path, trust_code))
    if path.name in FOLDER_WEIGHTS and (path.parent / "config.json").is_file():
        _read_config(checkpoint, path.parent / "config.json")  # save_for_hf's folder
        if not _in_folder:
            checkpoint.notes.append(f"read {path.parent / 'config.json'} beside {path.name}")
    return checkpoint


def _metadata_extras(checkpoint: Checkpoint, metadata: Mapping[str, str]) -> None:
    for key, target in (("preprocessing", "preprocessing"), ("class_names", "class_names")):
        if key not in metadata:
            continue
        try:
            value = json.loads(metadata[key])
        except json.JSONDecodeError:
            raise ModelLoadError(f"{checkpoint.path}: its metadata '{key}' is not JSON") from None
        if target == "preprocessing":
            checkpoint.preprocessing = value
        else:
            checkpoint.class_names = names_from(value, f"{checkpoint.path}'s class_names")
            checkpoint.class_names_from = "class_names" if checkpoint.class_names else None


def _take_apart(path: Path, obj: Any) -> Checkpoint:
    import torch
    from torch import nn

    checkpoint = Checkpoint(str(path))
    if isinstance(obj, nn.Module):
        checkpoint.module = obj
        return checkpoint
    if isinstance(obj, torch.Tensor):
        raise ModelLoadError(f"{path} holds a tensor, not a checkpoint or model")
    if isinstance(obj, (list, tuple)):
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a checkpoint or model")
    if not isinstance(obj, Mapping):
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not a checkpoint or model")
    if _is_tensor_dict(obj):
        checkpoint.state = dict(obj)
        return checkpoint
    for key in STATE_DICT_KEYS:
        value = obj.get(key)
        if isinstance(value, nn.Module):
            checkpoint.module = value
            break
        if isinstance(value, Mapping) and _is_tensor_dict(value):
            checkpoint.state = dict(value)
            break
    for key in EMA_KEYS:
        value = _tensor_dict_inside(obj.get(key))
        if value is not None:
            checkpoint.ema_state, checkpoint.ema_key = value, key
            break
    if checkpoint.state is None and checkpoint.module is None:
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if checkpoint.ema_state is None and len(tensors) * 2 <= len(obj):
            keys = ", ".join(sorted(map(str, obj))[:8])
            raise ModelLoadError(
                f"the checkpoint {path} holds no state dict (looked for "
                f"{', '.join(STATE_DICT_KEYS)}; found keys: {keys})"
            )
        if tensors:
            checkpoint.state = tensors
            checkpoint.notes.append(
                f"{path}: took its {len(tensors)} tensors as the weights "
                f"and ignored {len(obj) - len(tensors)} other entries"
            )
    found = stored_class_names(obj, str(path))
    if found:
        checkpoint.class_names, checkpoint.class_names_from = found
    hyper = obj.get("hyper_parameters")
    checkpoint.preprocessing = obj.get(
        "preprocessing", hyper.get("preprocessing") if isinstance(hyper, Mapping) else None
    )
    if isinstance(obj.get("args"), argparse.Namespace):  # timm train.py
        checkpoint.train_args = dict(vars(obj["args"]))
    if isinstance(obj.get("arch"), str) and checkpoint.train_args is not None:
        checkpoint.arch = obj["arch"]  # without args, train.py wrote the class name only
    return checkpoint


def _tensor_dict_inside(value) -> dict | None:
    """An EMA entry: a state dict, or a dict holding one (`{"state_dict": …}`, `{"module": …}`)."""
    if isinstance(value, Mapping):
        if _is_tensor_dict(value):
            return dict(value)
        for key in ("state_dict", "module", "model"):
            inner = value.get(key)
            if isinstance(inner, Mapping) and _is_tensor_dict(inner):
                return dict(inner)
    return None


def _read_folder(folder: Path, trust_code: bool) -> Checkpoint:
    weights = next((folder / n for n in FOLDER_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise ModelLoadError(
            f"folder {folder} holds no model weights (looked for {', '.join(FOLDER_WEIGHTS)})"
        )
    return read_checkpoint(weights, trust_code, _in_folder=True)  # and config.json beside it


def _read_config(checkpoint: Checkpoint, config_path: Path) -> None:
    """config.json beside the weights: the model's config (timm: architecture, num_classes,
    pretrained_cfg), class names, and a `preprocessing` entry in our schema."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {config_path}: {_first_line(exc)}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_path} is not a JSON object")
    checkpoint.config, checkpoint.config_path = config, str(config_path)
    if checkpoint.class_names is None:
        names = config_class_names(config, str(config_path))
        if names:
            checkpoint.class_names, checkpoint.class_names_from = names, "config.json"
    if checkpoint.preprocessing is None and isinstance(config.get("preprocessing"), dict):
        checkpoint.preprocessing = config["preprocessing"]


def _is_tensor_dict(obj: Mapping) -> bool:
    import torch

    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def classifier_width(state) -> int | None:
    """The output width of the last 2-D weight in a state dict (the classifier), if any."""
    if not isinstance(state, Mapping):
        return None
    last = None
    for key, value in state.items():
        if str(key).endswith("weight") and getattr(value, "ndim", 0) == 2:
            last = value
    return int(last.shape[0]) if last is not None else None


# --- writing -------------------------------------------------------------------------------------


def save_checkpoint(
    model, path: str | Path, *, preprocessing=None, class_names=None, **extra: Any
) -> Path:
    """Write `model`'s weights with its preprocessing and class names, so that loading it later
    (`cnntool … PATH --arch …`, or `--weights PATH`) needs no options.

    A `.safetensors` path stores the tensors, with `preprocessing` and `class_names` as JSON
    strings in the metadata. Any other path is a `torch.save` dict: `{"state_dict": …,
    "preprocessing": {…}, "class_names": […], "cnntool_format": 1, **extra}` (extra values must
    be plain data: numbers, strings, lists, dicts, tensors). `model` may be an nn.Module or a
    state dict; `preprocessing` a Preprocessing or a schema dict; `class_names` a list or a
    {name: index} dict.
    """

    from cnntool.core.preprocessing import Preprocessing

    path = Path(path)
    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    state = {k: v.detach().cpu() for k, v in state.items()}
    prep = None
    if preprocessing is not None:
        prep = (
            preprocessing
            if isinstance(preprocessing, Preprocessing)
            else Preprocessing.from_dict(preprocessing, "save_checkpoint's preprocessing")
        ).to_dict()
    names = None
    if class_names is not None:
        names = names_from(class_names, "save_checkpoint's class_names")
        if names is None:
            raise ModelLoadError(
                "save_checkpoint's class_names must be a list of names or a {name: index} dict"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    # a new file (O_EXCL, random name) beside the target: never a link planted at a fixed name
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(handle, 0o666 & ~mask)  # mkstemp makes 0600; a checkpoint gets the usual mode
    os.close(handle)
    temporary = Path(name)
    try:
        _save_as(path, temporary, state, prep, names, extra)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _save_as(path: Path, temporary: Path, state, prep, names, extra) -> None:
    """save_checkpoint's file, in `path`'s format, written to `temporary`."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = {"format": "pt", "cnntool_format": str(FORMAT_VERSION)}
        if prep is not None:
            metadata["preprocessing"] = json.dumps(prep)
        if names is not None:
            metadata["class_names"] = json.dumps(names)
        # safetensors refuses tensors that share memory (tied weights): store copies.
        save_file(
            {k: v.contiguous().clone() for k, v in state.items()}, str(temporary), metadata=metadata
        )
    else:
        record = {"state_dict": state, "cnntool_format": FORMAT_VERSION, **extra}
        if prep is not None:
            record["preprocessing"] = prep
        if names is not None:
            record["class_names"] = names
        torch.save(record, temporary)


def _first_line(exc: BaseException) -> str:
    return first_line(exc)
