"""Reading weight files safely, and fitting a state dict to an architecture with diagnostics.

Safety: `torch.load(weights_only=True)` always. Anything that would unpickle arbitrary Python
objects (a whole pickled nn.Module) needs `trust_code=True`, because unpickling can run code.
GPU-saved tensors are mapped to the CPU while reading, so they load on a CPU-only machine.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

from cnntool.errors import ModelLoadError, UntrustedCodeError

WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".tar")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile
CLASS_NAME_KEYS = ("class_names", "classes", "categories", "labels")


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a `code/` folder and `constants.pkl`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.split("/", 1)[-1].startswith("code/") for n in names) and any(
        n.endswith("constants.pkl") for n in names)


def read_weights(path: str | Path, trust_code: bool = False) -> Any:
    """The object stored in a weight file, with every tensor on the CPU."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weight file {path} does not exist")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower() and "weights_only" not in str(exc).lower():
            raise ModelLoadError(f"cannot read {path}: it is not a PyTorch weight file or it is "
                                 f"corrupt ({_first_line(exc)})") from None
        if not trust_code:
            raise UntrustedCodeError(
                f"{path} contains pickled Python objects (such as a whole nn.Module), and "
                "unpickling them can run arbitrary code; pass --trust-code only if you trust "
                "this file, or save a state_dict instead") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile errors… for bad files
        raise ModelLoadError(f"cannot read {path}: it is truncated, corrupt or not a PyTorch "
                             f"file ({_first_line(exc)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot unpickle {path}: {_first_line(exc)}") from None


def _read_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ModelLoadError("reading .safetensors files needs the package 'safetensors' "
                             "(pip install safetensors)") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path}: it is truncated or not a safetensors file "
                             f"({_first_line(exc)})") from None


def load_torchscript(path: Path):
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # TorchScript is deprecated upstream, but users have archives
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(f"cannot load TorchScript archive {path}: {_first_line(exc)}") from None


def split_checkpoint(obj: Any) -> tuple[Any, list[str] | None]:
    """(state dict or module, class names if stored) from whatever a checkpoint file held."""
    from torch import nn

    class_names = None
    if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        for key in CLASS_NAME_KEYS:
            value = obj.get(key)
            if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
                class_names = list(value)
        for key in STATE_DICT_KEYS:
            value = obj.get(key)
            if isinstance(value, nn.Module) or (isinstance(value, Mapping) and _is_tensor_dict(value)):
                return value, class_names
        keys = ", ".join(sorted(map(str, obj))[:8])
        raise ModelLoadError(f"the checkpoint holds no state dict (looked for "
                             f"{', '.join(STATE_DICT_KEYS)}; found keys: {keys})")
    return obj, class_names


def _is_tensor_dict(obj: Mapping) -> bool:
    import torch

    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def strip_wrapper_prefixes(state_dict: Mapping[str, Any], expected: set[str]) -> dict[str, Any]:
    """Remove `module.` / `_orig_mod.` (also nested, e.g. `_orig_mod.module.`) when present."""
    state = dict(state_dict)
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state) and not (set(state) & expected):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def mismatch_report(model, state_dict: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, 'key: checkpoint [..] vs model [..]' shape mismatches)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k}: checkpoint {list(state_dict[k].shape)} vs model {list(v.shape)}"
             for k, v in expected.items()
             if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(v.shape)]
    return missing, unexpected, wrong


def load_state_dict_strictly(model, state_dict: Mapping[str, Any], what: str) -> None:
    """Load every key, or raise one sentence naming the first few problems and their counts."""
    state = strip_wrapper_prefixes(state_dict, set(model.state_dict()))
    missing, unexpected, wrong = mismatch_report(model, state)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong)):
            if keys:
                shown = "; ".join(keys[:3]) + ("; …" if len(keys) > 3 else "")
                parts.append(f"{len(keys)} {label} ({shown})")
        raise ModelLoadError(f"the weights do not fit {what}: " + ", ".join(parts))
    model.load_state_dict(state, strict=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
