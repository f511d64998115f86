"""How a timm model the user trained was fed, from what they saved beside its weights.

A timm architecture carries a pretrained_cfg: the feed of timm's own pretrained weights
(ImageNet's mean and std, 224 px, crop_pct 0.875…). A fine-tune was often fed otherwise (11
classes at 64 px, mean and std 0.5), and that is recorded, if anywhere, in
- `config.json` beside the weights: timm's `save_for_hf` writes the model's pretrained_cfg
  (with the export's data config), its `num_classes` and `model_args` there, whether the
  weights are then given as the folder or as `--weights folder/model.safetensors`;
- the `args` of a checkpoint written by timm's train.py (an argparse.Namespace: input_size or
  img_size, mean, std, crop_pct, interpolation, in_chans, num_classes, model), whose `arch` also
  names the architecture. timm's own validate.py resolves the eval feed from those args with
  `resolve_data_config(vars(args), model=model)`, and so do we.
When the weights are the user's and neither says how they were fed, timm's pretrained_cfg is
only a guess, and it is ranked as one (a warning naming the options), never "from timm".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cnntool.core.loading.preprocessing_sources import Source

# train.py arguments that change what timm.create_model builds (besides the architecture)
_BUILD_ARGS = {"in_chans": "in_chans", "gp": "global_pool"}
# create_model arguments that load or fetch something: never taken from a saved file (the
# weights come from the checkpoint itself, read safely; nothing is downloaded)
_LOADING_ARGS = ("pretrained", "checkpoint_path", "cache_dir", "pretrained_cfg")


def train_args(value: Any) -> dict | None:
    """A train.py checkpoint's `args` (an argparse.Namespace, read safely, or a dict) as a
    plain dict; None for anything else."""
    import argparse

    if isinstance(value, argparse.Namespace):
        return dict(vars(value))
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return dict(value)
    return None


def architecture(checkpoint) -> str | None:
    """The timm architecture a checkpoint names: config.json's `architecture`, or train.py's
    `args.model` / `arch`; None when it names none."""
    config = checkpoint.config or {}
    args = checkpoint.train_args or {}
    for name in (config.get("architecture"), args.get("model"), checkpoint.arch):
        if isinstance(name, str) and name:
            return name
    return None


def architecture_source(checkpoint) -> str:
    """Where `architecture` came from, for the note that says so."""
    if (checkpoint.config or {}).get("architecture"):
        return checkpoint.config_path or "config.json"
    if (checkpoint.train_args or {}).get("model"):
        return f"the training args in {checkpoint.path} (timm's train.py)"
    return f"the 'arch' entry of {checkpoint.path}"


def create_kwargs(checkpoint, num_classes: int | None) -> dict:
    """timm.create_model's keyword arguments for the model a checkpoint was trained as:
    config.json's `num_classes`, `model_args` and pretrained_cfg (as an overlay), or train.py's
    `num_classes`, `in_chans`, `gp` and `model_kwargs`. An explicit `num_classes` wins."""
    kwargs: dict[str, Any] = {}
    config = (checkpoint.config or {}) if checkpoint is not None else {}
    args = (checkpoint.train_args or {}) if checkpoint is not None else {}
    if isinstance(config.get("model_args"), Mapping):
        kwargs.update(config["model_args"])
    if isinstance(args.get("model_kwargs"), Mapping):
        kwargs.update(args["model_kwargs"])
    for key, argument in _BUILD_ARGS.items():
        if args.get(key) is not None:
            kwargs[argument] = args[key]
    for found in (config.get("num_classes"), args.get("num_classes")):
        if isinstance(found, int) and not isinstance(found, bool) and found > 0:
            kwargs.setdefault("num_classes", found)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    kwargs = {k: v for k, v in kwargs.items() if not str(k).startswith(_LOADING_ARGS)}
    if isinstance(config.get("pretrained_cfg"), Mapping):
        kwargs["pretrained_cfg_overlay"] = dict(config["pretrained_cfg"])
    return kwargs


def timm_sources(module, checkpoint, resolved: dict, arch: str) -> list[Source]:
    """The preprocessing sources of a timm model (lowest first): its pretrained_cfg (`resolved`,
    timm_models.timm_preprocessing's dict) — named after the config.json it came from, or a
    guess when the weights are the user's and nothing says how they were fed — then the
    train.py args, when the checkpoint has them."""
    if checkpoint is None:
        return [Source.of("timm's pretrained_cfg", resolved)]
    config = checkpoint.config or {}
    if isinstance(config.get("pretrained_cfg"), Mapping):
        return [Source.of(f"{checkpoint.config_path} (timm's save_for_hf)", resolved)]
    args = checkpoint.train_args
    if args is not None:
        guess = _guess(module, checkpoint, resolved, arch)
        fed = from_train_args(module, args)
        return [guess, Source.of(f"the training args in {checkpoint.path} (timm's train.py)", fed)]
    return [_guess(module, checkpoint, resolved, arch)]


def _guess(module, checkpoint, resolved: dict, arch: str) -> Source:
    pretrained_classes = (getattr(module, "pretrained_cfg", None) or {}).get("num_classes")
    outputs = checkpoint.classifier_width  # the weights' own (a rebuilt head's) class count
    tuned = (
        f"{Path(checkpoint.path).name} has {outputs} classes, not the {pretrained_classes} of "
        "timm's pretrained weights, and nothing beside it says how it was fed"
        if isinstance(outputs, int)
        and isinstance(pretrained_classes, int)
        and outputs != pretrained_classes
        else f"made for timm's own pretrained weights, and nothing in {checkpoint.path} says "
        "how its weights were fed"
    )
    name = f"a guess from timm's pretrained_cfg for {arch}"
    return Source(name, Source.of(name, resolved).fields, guess=True, reason=tuned)


def from_train_args(module, args: Mapping[str, Any]) -> dict:
    """The eval feed of a train.py run, as timm's validate.py resolves it: the args' input size,
    interpolation, mean, std and crop_pct over the model's pretrained_cfg."""
    from timm.data import resolve_data_config

    wanted = {
        key: args.get(key)
        for key in ("input_size", "img_size", "in_chans", "interpolation", "mean", "std")
    }
    wanted["crop_pct"] = args.get("crop_pct")
    wanted["crop_mode"] = args.get("crop_mode")
    config = resolve_data_config({k: v for k, v in wanted.items() if v is not None}, model=module)
    return schema_of(config)


def schema_of(config: Mapping[str, Any]) -> dict:
    """timm's data config -> our schema dict: crop_pct as timm computes the resize, and timm's
    'squash' crop mode (each side resized on its own, then the center crop) exactly."""
    import math

    size = list(config["input_size"])
    crop_pct = config.get("crop_pct") or 0.875
    data = {
        "input_size": size,
        "interpolation": config["interpolation"],
        "mean": list(config["mean"]),
        "std": list(config["std"]),
    }
    if config.get("crop_mode") == "squash":
        data["resize"] = [math.floor(side / crop_pct) for side in size[1:]]
    else:
        data["crop_pct"] = crop_pct
    return data
