"""MODEL spec -> a LoadedModel: eval-mode nn.Module on a device, its preprocessing, class names,
and the lines that say where each came from.

A spec is resolved in this order (DESIGN.md):
1. a built-in name (`efficientnet_lite0`, `lenet5-mnist`, `lenet5-mnist-adv`);
2. `timm:NAME` (optional timm) or user code `FILE.py:NAME` / `package.module:NAME`, with
   `weights`; code that is not installed needs `trust_code` (code_trust.py);
3. a weight file `PATH.pt|.pth|.ckpt|.bin|.tar|.safetensors` or a folder holding
   `model.safetensors` + `config.json`: TorchScript, a state dict (needs `arch`, or a timm
   `architecture` in config.json), a checkpoint dict (checkpoints.py); a pickled whole
   module only with `trust_code`;
4. a torchvision classification architecture (`resnet18`): random init unless `weights`.

Preprocessing is ranked by preprocessing_sources.py; class names, highest first: the
`classes` file, the checkpoint, the module's `class_names` attribute, the architecture's own
(built-in, torchvision's or timm's ImageNet names, when the classifier has as many outputs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnntool.core.device import resolve_device
from cnntool.core.loading import checkpoints, exported, hf_models, state_dicts
from cnntool.core.loading.architectures import (
    Built,
    build,
    imagenet_class_names,
    last_classifier,
    load_builtin_weights,
    load_checkpoint_into,
)
from cnntool.core.loading.class_names import names_from, read_class_names_file
from cnntool.core.loading.input_channels import first_convolution_run
from cnntool.core.loading.preprocessing_sources import (
    Chosen,
    PreprocessingOptions,
    Source,
    choose,
    guess_for_channels,
    hf_feed,
    read_json,
)
from cnntool.core.loading.spec import (
    TIMM_PREFIX,
    ModelSpec,
    SpecKind,
    architecture_spec,
    model_spec,
    torchvision_classifiers,
)
from cnntool.core.loading.timm_models import (
    INSTALL_HINT,
    timm_available,
    timm_crop_mode,
    timm_preprocessing,
    timm_version,
)
from cnntool.core.logits import main_output
from cnntool.core.preprocessing import Preprocessing
from cnntool.errors import CnnToolError, ModelLoadError, shorten

IMAGENET = Preprocessing(crop=(224, 224), resize=256)
__all__ = [
    "LoadedModel",
    "load_model",
    "check_forward",
    "list_models",
    "torchvision_classifiers",
    "PreprocessingOptions",
    "IMAGENET",
]


class ForwardError(CnnToolError):
    """The model cannot run on the input its preprocessing gives."""


@dataclass
class LoadedModel:
    """A model ready for analysis. `module` is in eval mode on `device`.

    `preprocessing_source` names where the preprocessing came from ("the checkpoint", "a guess
    from the first convolution (3 input channels)"…), `preprocessing_guessed` whether any of
    size, resize, mean or std is a guess. `notes` are lines worth printing (a stripped key
    prefix, EMA weights left aside), `warnings` lines to print as warnings (NaN weights).
    `num_outputs` is known after `check_forward`.
    """

    module: Any  # torch.nn.Module (not imported here so the type costs no import)
    name: str
    preprocessing: Preprocessing
    class_names: list[str] | None
    source: str
    device: Any
    trained_on: str | None = None
    random_weights: bool = (
        False  # an architecture without trained weights (torchvision's, no --weights)
    )
    preprocessing_source: str = "the caller"
    preprocessing_guessed: bool = False
    class_names_source: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    num_outputs: int | None = None
    first_conv: tuple[str, int] | None = None  # (module path, input channels)
    nonfinite: tuple[str, ...] = ()  # 'conv1.weight (3 NaN)' for every tensor holding NaN/inf
    preprocessing_choice: Chosen | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.preprocessing.input_shape

    def class_name(self, index: int) -> str | None:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return None

    def preprocessing_line(self) -> str:
        """`preprocessing: 3×32×32, resize 32 bilinear, mean (…), std (…) — from the checkpoint`;
        for a guess, a sentence naming the options that set it."""
        choice = self.preprocessing_choice
        if choice is not None and choice.preprocessing == self.preprocessing:
            return choice.line()
        return f"preprocessing: {self.preprocessing.describe()} — from {self.preprocessing_source}"

    def check_forward(self, input_shape: tuple[int, ...] | None = None) -> int | None:
        return check_forward(self, input_shape)


def list_models() -> list[dict]:
    """Every model a bare name can load: built-ins first, then torchvision architectures, then
    a line saying whether timm:NAME works here."""
    from torchvision.models import get_model_weights

    from cnntool.core.loading.zoo import BUILTIN_MODELS

    records: list[dict[str, Any]] = [
        {
            "name": m.name,
            "kind": "built-in",
            "trained_on": m.trained_on,
            "weights": "shipped (trained)",
            "description": m.description,
        }
        for m in BUILTIN_MODELS.values()
    ]
    for name in torchvision_classifiers():
        meta = get_model_weights(name).DEFAULT.meta
        records.append(
            {
                "name": name,
                "kind": "torchvision",
                "trained_on": "ImageNet-1k (with --weights)",
                "weights": "random init unless --weights",
                "num_params": meta.get("num_params"),
                "gmacs": meta.get("_ops"),
            }
        )
    version = timm_version()
    records.append(
        {
            "name": "timm:NAME",
            "kind": "timm",
            "trained_on": None,
            "available": version is not None,
            "weights": (
                f"timm {version}: any timm architecture, random init unless --weights"
                if version
                else f"timm is not installed ({INSTALL_HINT})"
            ),
        }
    )
    return records


def load_model(
    spec: str,
    *,
    arch: str | None = None,
    weights: str | None = None,
    device: str = "auto",
    trust_code: bool = False,
    preprocessing: PreprocessingOptions | None = None,
    classes: str | None = None,
    num_classes: int | None = None,
    use_ema: bool = False,
) -> LoadedModel:
    """Resolve a MODEL spec (see the module docstring) and return it ready for analysis.

    `preprocessing` holds the command line's input options (they win field by field);
    `classes` a class-names file; `num_classes` sizes the classifier of an architecture or a
    factory; `use_ema` loads a checkpoint's EMA weights instead of its plain ones.
    Option files are read before the model, so a bad one fails first.
    """
    options = preprocessing or PreprocessingOptions()
    command_line, from_file = options.command_line_fields(), options.file_fields()
    class_file = read_class_names_file(classes) if classes else None
    if num_classes is not None and num_classes < 1:
        raise ModelLoadError(f"--num-classes {num_classes} must be at least 1")
    target = resolve_device(device)
    built = _resolve(
        model_spec(spec),
        arch=arch,
        weights=weights,
        trust_code=trust_code,
        num_classes=num_classes,
        use_ema=use_ema,
    )
    extra = []
    if from_file:
        extra.append(Source(f"--preprocessing {options.file}", from_file))
    if command_line:
        extra.append(Source("the command line", command_line))
    loaded = _finish(built, extra, (f"--classes {classes}", class_file) if class_file else None)
    # an HF preprocessor_config.json says where each field came from
    if from_file and options.file is not None:
        feed = hf_feed(
            read_json(options.file, "--preprocessing"), f"--preprocessing {options.file}"
        )
        if feed is not None:
            loaded.notes.append(feed.line(f"--preprocessing {options.file}"))
            loaded.warnings.extend(feed.approximations)
    loaded.module = loaded.module.to(target).eval()
    loaded.device = target
    return loaded


# --- resolving the spec ---------------------------------------------------------------------------


def _resolve(spec: ModelSpec, *, arch, weights, trust_code, num_classes, use_ema) -> Built:
    if spec.kind is SpecKind.WEIGHT_FILE:
        if weights:
            raise ModelLoadError(
                f"{spec} is already a weight file; --weights is for an "
                "architecture given by name or FILE.py:NAME"
            )
        return _weight_file(spec.path, arch, trust_code, num_classes, use_ema)
    return _architecture(spec, arch, weights, trust_code, num_classes, use_ema)


def _architecture(spec: ModelSpec, arch, weights, trust_code, num_classes, use_ema) -> Built:
    builtin = spec.kind is SpecKind.BUILTIN
    if arch:
        raise ModelLoadError(
            f"--arch names the architecture of a weight file, and {spec} is "
            "already one; give its weights with --weights"
        )
    checkpoint = checkpoints.read_checkpoint(weights, trust_code) if weights else None
    if builtin and num_classes is not None and checkpoint is None:
        raise ModelLoadError(
            f"--num-classes needs --weights for the built-in {spec}: its "
            "packaged weights have their own classifier"
        )
    built = build(spec, num_classes=num_classes, trust_code=trust_code, checkpoint=checkpoint)
    if checkpoint is not None:
        load_checkpoint_into(
            built, checkpoint, spec.text, use_ema=use_ema, rebuild_head=num_classes is None
        )
        built.source = (
            f"{spec} architecture, weights from {weights}"
            if builtin
            else f"torchvision {spec}, weights from {weights}"
            if spec.kind is SpecKind.TORCHVISION
            else f"{spec} with weights from {weights}"
        )
    elif use_ema:
        raise ModelLoadError("--use-ema needs a checkpoint (a weight file, or --weights)")
    elif builtin:
        load_builtin_weights(built)
    return built


def _weight_file(path: Path, arch, trust_code, num_classes, use_ema) -> Built:
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist")
    if path.is_file() and exported.is_exported_program(path):
        return _exported_program(path, arch, trust_code)
    if path.is_file() and checkpoints.is_torchscript(path):
        module = checkpoints.load_torchscript(path)
        base = architecture_spec(arch) if arch else None
        built = build(base, num_classes=None, trust_code=trust_code) if base else None
        return Built(
            module=module,
            name=path.stem,
            source=f"TorchScript {path}",
            sources=built.sources if built else [],
            class_names=built.class_names if built else [],
        )
    config = hf_models.transformers_config(path) if not arch else None
    if config is not None:  # a save_pretrained folder (with --arch: its weights as a state dict)
        return _transformers_folder(path, config, trust_code)
    checkpoint = checkpoints.read_checkpoint(path, trust_code)
    if checkpoint.module is not None:  # a whole pickled module (only reachable with trust_code)
        return Built(
            module=checkpoint.module,
            name=path.stem,
            source=f"pickled module {path}",
            checkpoint=checkpoint,
        )
    notes = []
    if not arch:
        arch = _architecture_in_config(checkpoint)
        if arch:
            from cnntool.core.loading.timm_config import architecture_source

            notes.append(f"architecture {arch} from {architecture_source(checkpoint)}")
    if not arch:
        raise ModelLoadError(
            f"{path} holds a state dict (weights only); name its architecture "
            "with --arch (e.g. --arch resnet18, --arch timm:resnet18, or --arch "
            "my_model.py:Net)"
        )
    architecture = architecture_spec(arch)
    built = build(
        architecture, num_classes=num_classes, trust_code=trust_code, checkpoint=checkpoint
    )
    load_checkpoint_into(built, checkpoint, arch, use_ema=use_ema, rebuild_head=num_classes is None)
    built.notes[:0] = notes
    if architecture.kind is SpecKind.TORCHVISION:
        built.source, built.name = f"torchvision {arch} with weights from {path}", path.stem
    else:
        built.source = f"{arch} with weights from {path}"
    return built


def _exported_program(path: Path, arch, trust_code) -> Built:
    """A torch.export `.pt2`, unflattened (core/exported.py); its fixed input size is a source."""
    program = exported.load_exported_program(path)
    base = build(arch, num_classes=None, trust_code=trust_code) if arch else None
    sources = list(base.sources) if base else []
    if program.input_size is not None and program.size_source is not None:
        sources.append(
            Source(
                program.size_source,
                {"channels": program.input_size[0], "size": program.input_size[1:]},
            )
        )
    return Built(
        module=program.module,
        name=path.stem,
        source=f"exported program {path}",
        sources=sources,
        class_names=base.class_names if base else [],
        notes=program.notes,
    )


def _transformers_folder(folder: Path, config: dict, trust_code: bool) -> Built:
    """A Hugging Face `save_pretrained` folder, built by transformers (core/hf_models.py)."""
    model = hf_models.load_folder(folder, config, trust_code)
    return Built(
        module=model.module,
        name=folder.name,
        source=f"transformers {model.name} from {folder}",
        sources=model.sources,
        class_names=model.class_names,
        notes=model.notes,
        warnings=model.warnings,
    )


def _architecture_in_config(checkpoint: checkpoints.Checkpoint) -> str | None:
    """timm's hub folders name their architecture in config.json, timm's train.py checkpoints
    in their `args.model` and `arch`."""
    from cnntool.core.loading import timm_config

    name = timm_config.architecture(checkpoint)
    if name is not None:
        if not timm_available():
            raise ModelLoadError(
                f"{checkpoint.path} is a timm model ({name}); reading it needs "
                f"timm ({INSTALL_HINT}), or name its architecture with --arch"
            )
        return TIMM_PREFIX + name
    return None


# --- what the model gets: preprocessing, class names, checks --------------------------------------


def _finish(built: Built, option_sources: list[Source], class_file) -> LoadedModel:
    module = built.module
    notes = list(built.notes)
    unwrapped = hf_models.returning_logits(module)  # also a transformers model from user code
    if unwrapped:
        notes.append(unwrapped)
    first = first_convolution(module)
    sources = [_guess(first), *built.sources]
    timm_dict = timm_preprocessing(module)
    if timm_dict is not None:
        from cnntool.core.loading.timm_config import timm_sources

        sources.extend(timm_sources(module, built.checkpoint, timm_dict, built.name))
        if timm_crop_mode(module) not in ("center", "squash"):
            notes.append(
                f"timm's crop_mode '{timm_crop_mode(module)}' is approximated by a "
                "resize of the shorter side and a center crop"
            )
    own = _attribute(module, "preprocessing")
    if isinstance(own, (Preprocessing, Mapping)):
        sources.append(Source.of("the module's preprocessing attribute", own))
    stored = built.checkpoint.preprocessing if built.checkpoint is not None else None
    if isinstance(stored, str):
        try:
            stored = json.loads(stored)
        except json.JSONDecodeError:
            raise ModelLoadError("the checkpoint's preprocessing entry is not JSON") from None
    if stored is not None:
        sources.append(Source.of("the checkpoint", stored))
    chosen = choose([*sources, *option_sources])
    prep = chosen.preprocessing
    if first is not None and first[1] != prep.channels:
        # the first convolution registered is not always the first that runs (a functional
        # F.conv2d stem): ask the forward pass before refusing a channel count someone gave
        ran = first_convolution_run(module, prep.input_shape)
        if ran is not None and ran[1] != prep.channels:
            raise ModelLoadError(
                f"the input has {prep.channels} channel{'s' if prep.channels != 1 else ''} "
                f"(from {chosen.source}) but the model's first convolution "
                f"{ran[0] or '(the model)'} takes {ran[1]}; set --input-size {ran[1]},H,W or "
                "the preprocessing's input_size"
            )
        first = ran
    names, names_source = _class_names(built, module, class_file)
    loaded = LoadedModel(
        module=module,
        name=built.name,
        preprocessing=prep,
        class_names=names,
        source=built.source,
        device=None,
        trained_on=built.trained_on,
        random_weights=built.random_weights,
        preprocessing_source=chosen.source,
        preprocessing_guessed=chosen.guessed,
        class_names_source=names_source,
        notes=notes,
        warnings=list(built.warnings),
        first_conv=first,
        preprocessing_choice=chosen,
    )
    loaded.nonfinite = tuple(state_dicts.nonfinite_tensors(module))
    if loaded.nonfinite:
        shown = ", ".join(loaded.nonfinite[:4]) + (", …" if len(loaded.nonfinite) > 4 else "")
        count = len(loaded.nonfinite)
        loaded.warnings.append(
            f"{count} tensor{'s' if count != 1 else ''} of the model hold "
            f"NaN or inf values: {shown}; results computed with "
            f"{'them' if count != 1 else 'it'} are meaningless"
        )
    return loaded


def _attribute(module, name: str):
    try:
        return getattr(module, name, None)
    except Exception:  # noqa: BLE001 - TorchScript modules raise on unknown attributes
        return None


def _guess(first: tuple[str, int] | None) -> Source:
    if first is None:
        return Source(
            "a guess (no convolution found, so RGB)", _fields(guess_for_channels(3)), guess=True
        )
    channels = first[1]
    plural = "s" if channels != 1 else ""
    name = f"a guess from the first convolution ({channels} input channel{plural})"
    return Source(name, _fields(guess_for_channels(channels)), guess=True)


def _fields(prep: Preprocessing) -> dict:
    return dict(Source.of("", prep).fields)


def first_convolution(module) -> tuple[str, int] | None:
    """(module path, input channels) of the first 2-D convolution registered in `module` (also
    inside TorchScript), else of the first 4-D weight; None when there is none."""
    from torch import nn

    named = (_attribute(module, "pretrained_cfg") or {}).get("first_conv")  # timm knows its stem
    if isinstance(named, str):
        try:
            stem = module.get_submodule(named)
        except (AttributeError, TypeError):
            stem = None
        if isinstance(stem, nn.Conv2d):
            return named, int(stem.in_channels)
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            return name, int(child.in_channels)
        if getattr(child, "original_name", None) == "Conv2d":  # a scripted Conv2d
            channels = _attribute(child, "in_channels")
            if isinstance(channels, int):
                return name, channels
    for name, parameter in module.named_parameters():
        if parameter.ndim == 4:
            return name.rpartition(".")[0], int(parameter.shape[1])
    return None


def _class_names(built: Built, module, class_file) -> tuple[list[str] | None, str | None]:
    candidates: list[tuple[str, list[str]]] = []
    if class_file:
        candidates.append(class_file)
    checkpoint = built.checkpoint
    if checkpoint is not None and checkpoint.class_names:
        where = checkpoint.class_names_from or "class_names"
        candidates.append(
            (
                f"the checkpoint ({where})"
                if where != "config.json"
                else f"{Path(checkpoint.path).parent / 'config.json'}",
                checkpoint.class_names,
            )
        )
    own = names_from(_attribute(module, "class_names"), "the module's class_names attribute")
    if own:
        candidates.append(("the module's class_names attribute", own))
    outputs = _classifier_outputs(module)
    fitting = [
        (where, names)
        for where, names in built.class_names
        if outputs is None or len(names) == outputs
    ]
    candidates.extend(fitting)
    if timm_preprocessing(module) is not None and outputs == 1000 and not fitting:
        candidates.append(("timm's ImageNet-1k classes", imagenet_class_names()))
    if not candidates:
        return None, None
    where, names = candidates[0]
    return list(names), where


def _classifier_outputs(module) -> int | None:
    found = last_classifier(module)
    return int(found[1].out_features) if found else None


def check_forward(loaded: LoadedModel, input_shape: tuple[int, ...] | None = None) -> int | None:
    """One forward pass on a 1×C×H×W zeros input on the model's device. A failure is one
    sentence; NaN/inf output from NaN/inf weights is an error. Records and returns the number
    of outputs (`loaded.num_outputs`); warns when the class names do not match it."""
    import torch

    shape = tuple(input_shape or loaded.input_shape)
    text = "×".join(str(v) for v in (1, *shape))
    x = torch.zeros((1, *shape), device=loaded.device)
    try:
        with torch.no_grad():
            output = loaded.module(x)
    except Exception as exc:
        raise ForwardError(
            f"the model failed on a {text} input ({_torch_reason(exc)}); set its "
            "input with --input-size or --preprocessing"
        ) from exc
    logits = main_output(output)
    if logits is None:
        loaded.num_outputs = None
        return None
    loaded.num_outputs = int(logits.shape[1]) if logits.ndim >= 2 else int(logits.numel())
    if not bool(torch.isfinite(logits).all()):
        if loaded.nonfinite:
            shown = ", ".join(loaded.nonfinite[:3]) + (", …" if len(loaded.nonfinite) > 3 else "")
            raise ForwardError(
                f"the model's output is NaN or inf because {len(loaded.nonfinite)} "
                f"of its tensors hold NaN or inf ({shown}); every result would "
                "be meaningless"
            )
        loaded.warnings.append(f"the model's output on an all-zero {text} input is NaN or inf")
    names = loaded.class_names
    if names is not None and len(names) != loaded.num_outputs:
        loaded.warnings.append(
            f"the model has {loaded.num_outputs} outputs but {len(names)} "
            f"class names (from {loaded.class_names_source}); names past "
            "either end are not shown"
        )
    return loaded.num_outputs


def _torch_reason(exc: BaseException) -> str:
    """One line of torch's message: the first, or for TorchScript (whose message starts with
    its own traceback) the last, which is the error itself."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if "TorchScript" in lines[0] or lines[0].startswith("Traceback"):
        return shorten(lines[-1], 240)
    return shorten(lines[0], 240)
