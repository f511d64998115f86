"""Building a model from a name, and loading a checkpoint's weights into it.

An architecture (its kind decided once by spec.py) is one of
- a built-in name (`efficientnet_lite0`, `lenet5-mnist`…; zoo);
- a torchvision classification architecture (`resnet18`);
- `timm:NAME` (timm_models.py);
- user code, `FILE.py:NAME` or `package.module:NAME` (code_trust.py decides whether it
  may be imported).
`Built` carries the module with what the architecture itself says about its input and classes;
models.py ranks those against the checkpoint, the module's attributes and the command line.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnntool.core.loading import checkpoints, state_dicts
from cnntool.core.loading.checkpoints import Checkpoint
from cnntool.core.loading.code_trust import folder_on_path, import_module_spec, import_python_file
from cnntool.core.loading.preprocessing_sources import Source
from cnntool.core.loading.spec import ModelSpec, SpecKind
from cnntool.core.loading.timm_models import create_timm_model
from cnntool.core.preprocessing import Preprocessing
from cnntool.errors import ModelLoadError, unknown_name


@dataclass
class Built:
    """A module and what its architecture says about its input and classes."""

    module: Any
    name: str
    source: str
    sources: list[Source] = field(default_factory=list)  # preprocessing, lowest rank first
    class_names: list[tuple[str, list[str]]] = field(
        default_factory=list
    )  # (from, names), best first
    trained_on: str | None = None
    random_weights: bool = False
    checkpoint: Checkpoint | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a feed cnntool can only approximate


def imagenet_class_names() -> list[str]:
    """ImageNet-1k's class names in the usual order (torchvision's metadata; no download)."""
    from torchvision.models import AlexNet_Weights

    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def build(
    spec: ModelSpec,
    *,
    num_classes: int | None,
    trust_code: bool,
    checkpoint: Checkpoint | None = None,
) -> Built:
    """The architecture `spec` (classified by spec.py), randomly initialized (a built-in one
    too: its packaged weights are `load_builtin_weights`'s job). `num_classes` (explicit) or the
    checkpoint's classifier width (torchvision only: its constructors take it) sizes the head."""
    kind = spec.kind
    if kind is SpecKind.BUILTIN:
        return _builtin(spec.text, num_classes)
    if kind is SpecKind.TIMM:
        return _timm(spec.name, num_classes, checkpoint)
    if kind is SpecKind.CODE:
        return _user_code(spec.text, num_classes, trust_code)
    if kind is SpecKind.TORCHVISION:
        width = checkpoint.classifier_width if checkpoint is not None else None
        return _torchvision(spec.text, num_classes or width)
    raise ModelLoadError(f"{spec} is a weight file, not an architecture")


def _builtin(name: str, num_classes: int | None) -> Built:
    from cnntool.core.loading.zoo import BUILTIN_MODELS

    entry = BUILTIN_MODELS[name]
    built = Built(
        module=entry.build(),
        name=name,
        source=name,
        sources=[Source.of("the built-in entry", entry.preprocessing)],
        class_names=[("the built-in entry", entry.class_names())],
        trained_on=entry.trained_on,
    )
    if num_classes is not None:
        set_num_classes(built, num_classes, name)
    return built


def load_builtin_weights(built: Built) -> None:
    from cnntool.core.loading.zoo import BUILTIN_MODELS

    entry = BUILTIN_MODELS[built.name]
    path = entry.weights_path()
    state_dicts.load_state_dict_strictly(
        built.module, checkpoints.read_weights(path), f"built-in model '{built.name}'"
    )
    built.source = f"built-in {built.name}: {path}"


def _torchvision(name: str, num_classes: int | None) -> Built:
    import torchvision.models as tvm

    meta = tvm.get_model_weights(name).DEFAULT
    imagenet_names = list(meta.meta["categories"])
    kwargs = (
        {"num_classes": num_classes} if num_classes and num_classes != len(imagenet_names) else {}
    )
    module = tvm.get_model(name, weights=None, **_torchvision_kwargs(name), **kwargs)
    return Built(
        module=module,
        name=name,
        source=f"torchvision {name}, random init",
        sources=[Source.of("torchvision's weight metadata", torchvision_preprocessing(meta))],
        class_names=[] if kwargs else [("torchvision's weight metadata", imagenet_names)],
        random_weights=True,
    )


def _torchvision_kwargs(name: str) -> dict:
    # GoogLeNet/Inception build auxiliary heads (and warn about init) unless told not to.
    if name in ("googlenet", "inception_v3"):
        return {"aux_logits": False, "init_weights": True}
    return {}


def torchvision_preprocessing(weights) -> Preprocessing:
    transform = weights.transforms()
    crop = transform.crop_size[0]
    resize = transform.resize_size[0]
    return Preprocessing(
        crop=(crop, crop),
        resize=resize,
        interpolation=str(transform.interpolation.value),
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        channels=3,
    )


def _timm(name: str, num_classes: int | None, checkpoint: Checkpoint | None) -> Built:
    from cnntool.core.loading.timm_config import create_kwargs

    # what the checkpoint says it was built as: config.json's num_classes, model_args and
    # pretrained_cfg (its feed), or train.py's num_classes, in_chans and model_kwargs
    module = create_timm_model(name, **create_kwargs(checkpoint, num_classes))
    return Built(module=module, name=name, source=f"timm {name}, random init", random_weights=True)


def _user_code(spec: str, num_classes: int | None, trust_code: bool) -> Built:
    from torch import nn

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ModelLoadError(f"'{spec}' is not FILE.py:NAME or package.module:NAME")
    is_file = target.endswith(".py")
    module = (
        import_python_file(Path(target), trust_code)
        if is_file
        else import_module_spec(target, trust_code)
    )
    factory = getattr(module, attr, None)
    if factory is None:
        candidates = [
            n
            for n, v in vars(module).items()
            if callable(v)
            and not n.startswith("_")
            and (isinstance(v, type) and issubclass(v, nn.Module) or not isinstance(v, type))
        ]
        raise unknown_name(f"name in {target}", attr, candidates)
    takes_num_classes = num_classes is not None and _accepts(factory, "num_classes")
    try:
        with folder_on_path(Path(target).parent) if is_file else contextlib.nullcontext():
            net = factory(num_classes=num_classes) if takes_num_classes else factory()
    except Exception as exc:
        raise ModelLoadError(f"calling {spec}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(net, nn.Module):
        raise ModelLoadError(f"{spec}() returned a {type(net).__name__}, not a torch.nn.Module")
    built = Built(module=net, name=attr, source=spec)
    if num_classes is not None and not takes_num_classes:
        set_num_classes(built, num_classes, spec)
    return built


def _accepts(factory, argument: str) -> bool:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return argument in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def last_classifier(module) -> tuple[str, Any] | None:
    """(name, module) of the last Linear registered in `module` (the classifier, usually)."""
    from torch import nn

    found = None
    for name, child in module.named_modules():
        if isinstance(child, nn.Linear):
            found = (name, child)
    return found


def set_num_classes(built: Built, num_classes: int, what: str) -> None:
    """Give a model that takes no num_classes argument a new, untrained last Linear."""
    from torch import nn

    if num_classes < 1:
        raise ModelLoadError(f"--num-classes {num_classes} must be at least 1")
    found = last_classifier(built.module)
    if found is None:
        raise ModelLoadError(
            f"cannot give {what} {num_classes} classes: it takes no num_classes "
            "argument and has no Linear classifier to replace"
        )
    name, old = found
    if old.out_features == num_classes:
        return
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    state_dicts.replace_module(built.module, name, new.to(old.weight.device, old.weight.dtype))
    built.class_names = [entry for entry in built.class_names if len(entry[1]) == num_classes]
    built.notes.append(
        f"replaced the classifier {name} ({old.in_features}→{old.out_features}) "
        f"with a new one for {num_classes} classes"
    )


def load_checkpoint_into(
    built: Built, checkpoint: Checkpoint, what: str, *, use_ema: bool, rebuild_head: bool
) -> None:
    """Load `checkpoint`'s weights (or its EMA weights) into `built.module`, strictly."""
    if checkpoint.module is not None:
        raise ModelLoadError(
            f"{checkpoint.path} holds a whole model, not weights for {what}; "
            "load it directly as the MODEL argument"
        )
    state, prefix_ema = checkpoint.state, use_ema
    if checkpoint.ema_state is not None:
        key = checkpoint.ema_key
        if use_ema or state is None:
            state, prefix_ema = checkpoint.ema_state, False
            built.notes.append(
                f"loaded the EMA weights ({key})"
                if use_ema
                else f"the checkpoint holds only EMA weights ({key}); loaded those"
            )
        else:
            built.notes.append(
                f"the checkpoint also holds EMA weights ({key}): --use-ema loads them"
            )
    if state is None:
        raise ModelLoadError(f"{checkpoint.path} holds no weights")
    built.notes.extend(checkpoint.notes)
    built.notes.extend(
        state_dicts.load_state_dict_strictly(
            built.module, state, what, use_ema=prefix_ema, rebuild_head=rebuild_head
        )
    )
    built.checkpoint = checkpoint
    built.random_weights = False
