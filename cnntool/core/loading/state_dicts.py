"""Fitting a state dict to a model, strictly: wrapper and Lightning-style key prefixes
stripped, EMA weights chosen on request, a classifier rebuilt to the checkpoint's width; and
the loaded tensors checked for NaN/inf. Reading the file is checkpoints.py's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from cnntool.core.loading.checkpoints import EMA_KEYS
from cnntool.errors import ModelLoadError

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP, torch.compile


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
        shown = ", ".join(others[:3]) + (", …" if ignored > 3 else "")
        text += f" and ignored {ignored} other keys ({shown})"
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
    new: nn.Module
    if isinstance(old, nn.Linear) and tuple(weight.shape[1:]) == (old.in_features,):
        new = nn.Linear(old.in_features, outputs, bias=old.bias is not None)
        before = old.out_features
    elif isinstance(old, nn.Conv2d) and tuple(weight.shape[1:]) == tuple(old.weight.shape[1:]):
        padding = old.padding if isinstance(old.padding, str) else _pair(old.padding)
        new = nn.Conv2d(
            old.in_channels,
            outputs,
            _pair(old.kernel_size),
            _pair(old.stride),
            padding,
            _pair(old.dilation),
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


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's (H, W) setting; torch types these as tuples of any length."""
    height, width = values
    return height, width


def replace_module(model, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


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
