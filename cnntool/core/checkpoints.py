"""Reading weight files safely, fitting a state dict to an architecture, and writing checkpoints
that carry their preprocessing and class names.

Safety: `torch.load(weights_only=True)` always. Anything that would unpickle arbitrary Python
objects (a whole pickled nn.Module) needs `trust_code=True`, because unpickling can run code.
GPU-saved tensors are mapped to the CPU while reading, so they load on a CPU-only machine.
A file is sniffed before torch reads it, so random bytes are "not a PyTorch checkpoint" rather
than a request for --trust-code, and torch's pickle warnings never reach stderr.

What a checkpoint may hold besides the weights (`read_checkpoint`):
- the weights under `state_dict`, `model_state_dict`, `model`, … or as the whole dict;
- EMA weights under `state_dict_ema`, `model_ema`, … (timm, Lightning EMA callbacks);
- class names (core/class_names.py), Lightning `hyper_parameters` included;
- a `preprocessing` entry in the JSON schema of core/preprocessing.py;
- for a `.safetensors` file, the last two as JSON strings in its metadata;
- for a folder, `model.safetensors` (or `pytorch_model.bin`) and `config.json` beside it.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnntool.core.class_names import config_class_names, names_from, stored_class_names
from cnntool.errors import ModelLoadError, UntrustedCodeError, first_line, shorten

WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".tar", ".pt2")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights", "module")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema_model", "ema")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile
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
    config: dict | None = None  # config.json of a model folder
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
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4 in the checkpoint"
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
    except Exception as exc:  # torch raises RuntimeError, EOFError, zipfile errors… for bad files
        raise ModelLoadError(
            f"cannot read {path}: it is truncated or corrupt ({_first_line(exc)})"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot unpickle {path}: {_first_line(exc)}") from None


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
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read {path}: it is truncated or not a safetensors file ({_first_line(exc)})"
        ) from None


def load_torchscript(path: Path):
    import torch

    try:
        with (
            warnings.catch_warnings()
        ):  # TorchScript is deprecated upstream, but users have archives
            warnings.simplefilter("ignore")
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load TorchScript archive {path}: {_first_line(exc)}"
        ) from None


def read_checkpoint(path: str | Path, trust_code: bool = False) -> Checkpoint:
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
        return checkpoint
    return _take_apart(path, _torch_load(path, trust_code))


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
    checkpoint = read_checkpoint(weights, trust_code)
    config_path = folder / "config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read {config_path}: {_first_line(exc)}") from None
        if not isinstance(config, dict):
            raise ModelLoadError(f"{config_path} is not a JSON object")
        checkpoint.config = config
        if checkpoint.class_names is None:
            names = config_class_names(config, str(config_path))
            if names:
                checkpoint.class_names, checkpoint.class_names_from = names, "config.json"
        if checkpoint.preprocessing is None and isinstance(config.get("preprocessing"), dict):
            checkpoint.preprocessing = config["preprocessing"]
    return checkpoint


def split_checkpoint(obj: Any) -> tuple[Any, list[str] | None]:
    """(state dict or module, class names if stored) from whatever a checkpoint file held."""
    checkpoint = _take_apart(Path("the checkpoint"), obj)
    return (
        checkpoint.module if checkpoint.module is not None else checkpoint.state,
        checkpoint.class_names,
    )


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


# --- fitting a state dict to a model ---------------------------------------------------------------


def strip_wrapper_prefixes(state_dict: Mapping[str, Any], expected: set[str]) -> dict[str, Any]:
    """Remove `module.` / `_orig_mod.` (also nested, e.g. `_orig_mod.module.`) when present."""
    state = dict(state_dict)
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state) and not (set(state) & expected):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def mismatch_report(model, state_dict: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, 'key: checkpoint [..] vs model [..]' shape mismatches)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k}: checkpoint {list(state_dict[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in state_dict
        and hasattr(state_dict[k], "shape")
        and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    return missing, unexpected, wrong


def load_state_dict_strictly(
    model,
    state_dict: Mapping[str, Any],
    what: str,
    *,
    use_ema: bool = False,
    rebuild_head: bool = False,
) -> list[str]:
    """Load every key, or raise one sentence naming the first few problems and their counts.

    Wrapper prefixes are stripped; a prefix such as Lightning's `model.` is stripped when that
    is what makes the keys fit (an `…ema…` prefix is preferred with `use_ema`); with
    `rebuild_head`, a last classifier whose only difference is its number of outputs is rebuilt
    to the checkpoint's. Returns what was done, as lines for the user.
    """
    expected = set(model.state_dict())
    notes: list[str] = []
    state = strip_wrapper_prefixes(state_dict, expected)
    if set(state) != expected:
        state = _strip_fitting_prefix(state, expected, use_ema, notes)
    elif use_ema:
        raise ModelLoadError(
            f"the checkpoint for {what} holds no EMA weights (looked for "
            f"{', '.join(EMA_KEYS)} and an '…ema…' key prefix)"
        )
    missing, unexpected, wrong = mismatch_report(model, state)
    if rebuild_head and wrong and not missing and not unexpected:
        rebuilt = _rebuild_classifier(model, state)
        if rebuilt:
            notes.append(rebuilt)
            missing, unexpected, wrong = mismatch_report(model, state)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrongly shaped", wrong),
        ):
            if keys:
                shown = "; ".join(keys[:3]) + ("; …" if len(keys) > 3 else "")
                parts.append(f"{len(keys)} {label} ({shown})")
        raise ModelLoadError(f"the weights do not fit {what}: " + ", ".join(parts))
    model.load_state_dict(state, strict=True)
    return notes


def _strip_fitting_prefix(state: dict, expected: set[str], use_ema: bool, notes: list[str]) -> dict:
    """The keys under one prefix (`model.`, `net.`, `model.backbone.`…) when exactly those fit."""
    counts: Counter = Counter()
    for key in state:
        parts = key.split(".")
        for cut in range(1, len(parts)):
            if ".".join(parts[cut:]) in expected:
                counts[".".join(parts[:cut]) + "."] += 1
    fits = {}
    for prefix, _ in counts.most_common():
        inner = strip_wrapper_prefixes(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, expected
        )
        if set(inner) == expected:
            fits[prefix] = inner
    ema = [p for p in fits if "ema" in p.lower()]
    plain = [p for p in fits if p not in ema]
    if use_ema and not ema:
        raise ModelLoadError(
            "the checkpoint holds no EMA weights (looked for "
            f"{', '.join(EMA_KEYS)} and an '…ema…' key prefix)"
        )
    chosen = (ema if use_ema else plain or ema)[:1]
    if not chosen:
        if use_ema:
            raise ModelLoadError("the checkpoint holds no EMA weights that fit the model")
        return state
    prefix = chosen[0]
    inner = fits[prefix]
    ignored = len(state) - len(inner) - sum(len(fits[p]) for p in fits if p != prefix)
    text = f"stripped the prefix '{prefix}' from {len(inner)} keys"
    if ignored > 0:
        others = [k for k in state if not any(k.startswith(p) for p in fits)]
        text += f" and ignored {ignored} other keys ({', '.join(others[:3])}{', …' if ignored > 3 else ''})"
    notes.append(text)
    if ema and prefix in plain:
        notes.append(
            f"the checkpoint also holds EMA weights (under '{ema[0]}'): --use-ema loads them"
        )
    return inner


def _rebuild_classifier(model, state: Mapping[str, Any]) -> str | None:
    """Replace the one Linear (or 1×1-style Conv2d) whose weights differ only in their number
    of outputs with one the size of the checkpoint's; None when the mismatch is anything else."""
    from torch import nn

    expected = model.state_dict()
    wrong = [
        k for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    owners = {k.rsplit(".", 1)[0] for k in wrong}
    if len(owners) != 1:
        return None
    name = owners.pop()
    if not set(wrong) <= {f"{name}.weight", f"{name}.bias"} or f"{name}.weight" not in state:
        return None
    old, weight = model.get_submodule(name), state[f"{name}.weight"]
    outputs = int(weight.shape[0])
    if isinstance(old, nn.Linear) and tuple(weight.shape[1:]) == (old.in_features,):
        new = nn.Linear(old.in_features, outputs, bias=old.bias is not None)
        before = old.out_features
    elif isinstance(old, nn.Conv2d) and tuple(weight.shape[1:]) == tuple(old.weight.shape[1:]):
        new = nn.Conv2d(
            old.in_channels,
            outputs,
            old.kernel_size,
            old.stride,
            old.padding,
            old.dilation,
            old.groups,
            old.bias is not None,
        )
        before = old.out_channels
    else:
        return None
    replace_module(model, name, new.to(device=old.weight.device, dtype=old.weight.dtype))
    return (
        f"rebuilt the classifier '{name}' with the checkpoint's {outputs} outputs (the "
        f"model defines {before})"
    )


def replace_module(model, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


# --- checks and writing --------------------------------------------------------------------------


def nonfinite_tensors(module) -> list[str]:
    """'conv1.weight (3 NaN)' for every parameter or buffer holding NaN or inf."""
    import torch

    found = []
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    for name, tensor in tensors:
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
            continue
        nan = int(torch.isnan(tensor).sum())
        inf = int(torch.isinf(tensor).sum())
        counts = ", ".join(
            part for part in (f"{nan} NaN" if nan else "", f"{inf} inf" if inf else "") if part
        )
        found.append(f"{name} ({counts})")
    return found


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
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(handle, 0o666 & ~mask)  # mkstemp makes 0600; a checkpoint gets the usual mode
    os.close(handle)
    temporary = Path(temporary)
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
