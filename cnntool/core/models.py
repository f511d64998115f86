"""MODEL spec -> a LoadedModel: eval-mode nn.Module on a device, its preprocessing, class names.

A spec is resolved in this order (DESIGN.md):
1. a built-in name (`efficientnet_lite0`, `lenet5-mnist`, `lenet5-mnist-adv`);
2. a torchvision classification architecture (`resnet18`): random init unless `weights`;
3. a weight file `PATH.pt|.pth|.ckpt|.bin|.tar|.safetensors`: TorchScript, a state dict (needs
   `arch`), a checkpoint dict (`state_dict`/`model`/`model_state_dict`…), `module.` and
   `_orig_mod.` prefixes; a pickled whole module only with `trust_code`;
4. user code `FILE.py:NAME` (needs `trust_code`) or `package.module:NAME`, with `weights`.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnntool.core import checkpoints
from cnntool.core.device import resolve_device
from cnntool.core.preprocessing import Preprocessing
from cnntool.errors import ModelLoadError, UntrustedCodeError, unknown_name

IMAGENET = Preprocessing(crop=(224, 224), resize=256)


@dataclass
class LoadedModel:
    """A model ready for analysis. `module` is in eval mode on `device`."""

    module: Any  # torch.nn.Module (not imported here so the type costs no import)
    name: str
    preprocessing: Preprocessing
    class_names: list[str] | None
    source: str
    device: Any
    trained_on: str | None = None
    random_weights: bool = False  # an architecture without trained weights (torchvision's, no --weights)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.preprocessing.input_shape

    def class_name(self, index: int) -> str | None:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return None


@functools.lru_cache(maxsize=1)
def torchvision_classifiers() -> tuple[str, ...]:
    """Names of torchvision's classification architectures (not detection/segmentation/video)."""
    import torchvision.models

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def list_models() -> list[dict]:
    """Every model a bare name can load: built-ins first, then torchvision architectures."""
    from cnntool.core.zoo import BUILTIN_MODELS
    from torchvision.models import get_model_weights

    records = [{"name": m.name, "kind": "built-in", "trained_on": m.trained_on,
                "weights": "shipped (trained)", "description": m.description}
               for m in BUILTIN_MODELS.values()]
    for name in torchvision_classifiers():
        meta = get_model_weights(name).DEFAULT.meta
        records.append({"name": name, "kind": "torchvision", "trained_on": "ImageNet-1k (with --weights)",
                        "weights": "random init unless --weights", "num_params": meta.get("num_params"),
                        "gmacs": meta.get("_ops")})
    return records


def load_model(spec: str, *, arch: str | None = None, weights: str | None = None,
               device: str = "auto", trust_code: bool = False) -> LoadedModel:
    """Resolve a MODEL spec (see the module docstring) and return it ready for analysis."""
    target = resolve_device(device)
    loaded = _resolve(spec, arch=arch, weights=weights, trust_code=trust_code)
    loaded.module = loaded.module.to(target).eval()
    loaded.device = target
    return loaded


def _resolve(spec: str, *, arch, weights, trust_code) -> LoadedModel:
    from cnntool.core.zoo import BUILTIN_MODELS

    if spec in BUILTIN_MODELS:
        return _builtin(spec, weights, trust_code)
    if ":" in spec and not Path(spec).exists():
        return _user_code(spec, weights, trust_code)
    path = Path(spec)
    if path.suffix.lower() in checkpoints.WEIGHT_SUFFIXES or path.is_file():
        return _weight_file(path, arch, trust_code)
    if spec in torchvision_classifiers():
        return _torchvision(spec, weights, trust_code)
    names = [*BUILTIN_MODELS, *torchvision_classifiers()]
    raise unknown_name("model", spec, names, hint="`cnntool models` lists them; a file path must exist")


def _builtin(name: str, weights: str | None, trust_code: bool) -> LoadedModel:
    from cnntool.core.zoo import BUILTIN_MODELS, load_builtin

    entry = BUILTIN_MODELS[name]
    if weights:
        module = entry.build()
        _load_weights_into(module, weights, name, trust_code)
        source = f"{name} architecture, weights from {weights}"
    else:
        module = load_builtin(name)
        source = f"built-in {name}: {entry.weights_path()}"
    return LoadedModel(module=module, name=name, preprocessing=entry.preprocessing,
                       class_names=entry.class_names(), source=source, device=None,
                       trained_on=entry.trained_on)


def _torchvision(name: str, weights: str | None, trust_code: bool,
                 state_dict: dict | None = None, stored_names: list[str] | None = None) -> LoadedModel:
    import torchvision.models as tvm

    meta_weights = tvm.get_model_weights(name).DEFAULT
    state = state_dict
    if weights:
        state, stored_names = checkpoints.split_checkpoint(checkpoints.read_weights(weights, trust_code))
        if not isinstance(state, dict):
            raise ModelLoadError(f"{weights} holds a whole model, not weights for {name}; load "
                                 "it directly as the MODEL argument")
    imagenet_names = list(meta_weights.meta["categories"])
    # A fine-tuned checkpoint with another number of classes: build the head to fit it.
    num_classes = _classifier_width(state) or len(imagenet_names)
    kwargs = {"num_classes": num_classes} if num_classes != len(imagenet_names) else {}
    class_names = stored_names or (None if kwargs else imagenet_names)
    module = tvm.get_model(name, weights=None, **_arch_kwargs(name), **kwargs)
    source = f"torchvision {name}, random init"
    if state is not None:
        checkpoints.load_state_dict_strictly(module, state, f"torchvision's {name}")
        source = f"torchvision {name}, weights from {weights or 'checkpoint'}"
    return LoadedModel(module=module, name=name, preprocessing=_torchvision_preprocessing(meta_weights),
                       class_names=class_names, source=source, device=None,
                       random_weights=state is None)


def _arch_kwargs(name: str) -> dict:
    # GoogLeNet/Inception build auxiliary heads (and warn about init) unless told not to.
    if name in ("googlenet", "inception_v3"):
        return {"aux_logits": False, "init_weights": True}
    return {}


def _classifier_width(state) -> int | None:
    """The output width of the last 2-D weight in a state dict (the classifier), if any."""
    if not isinstance(state, dict):
        return None
    last = None
    for key, value in state.items():
        if key.endswith("weight") and getattr(value, "ndim", 0) == 2:
            last = value
    return int(last.shape[0]) if last is not None else None


def _torchvision_preprocessing(weights) -> Preprocessing:
    transform = weights.transforms()
    crop = transform.crop_size[0]
    resize = transform.resize_size[0]
    interpolation = str(transform.interpolation.value)
    return Preprocessing(crop=(crop, crop), resize=resize, interpolation=interpolation,
                         mean=tuple(transform.mean), std=tuple(transform.std), channels=3)


def _weight_file(path: Path, arch: str | None, trust_code: bool) -> LoadedModel:
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    if checkpoints.is_torchscript(path):
        module = checkpoints.load_torchscript(path)
        base = _resolve(arch, arch=None, weights=None, trust_code=trust_code) if arch else None
        return LoadedModel(module=module, name=path.stem,
                           preprocessing=base.preprocessing if base else IMAGENET,
                           class_names=base.class_names if base else None,
                           source=f"TorchScript {path}", device=None)
    state, class_names = checkpoints.split_checkpoint(checkpoints.read_weights(path, trust_code))
    if not isinstance(state, dict):  # a whole pickled module (only reachable with trust_code)
        return LoadedModel(module=state, name=path.stem, preprocessing=_infer_preprocessing(state),
                           class_names=class_names, source=f"pickled module {path}", device=None)
    if not arch:
        raise ModelLoadError(f"{path} holds a state dict (weights only); name its architecture "
                             "with --arch (e.g. --arch resnet18, or --arch my_model.py:Net)")
    from cnntool.core.zoo import BUILTIN_MODELS

    if arch in BUILTIN_MODELS:
        loaded = _builtin_architecture(arch)
    elif ":" in arch:
        loaded = _user_code(arch, None, trust_code)
    elif arch in torchvision_classifiers():
        return _named_torchvision_with_state(arch, state, class_names, path)
    else:
        raise unknown_name("architecture", arch, [*BUILTIN_MODELS, *torchvision_classifiers()],
                           hint="`cnntool models` lists them")
    checkpoints.load_state_dict_strictly(loaded.module, state, arch)
    loaded.source = f"{arch} with weights from {path}"
    loaded.class_names = class_names or loaded.class_names
    return loaded


def _named_torchvision_with_state(arch, state, class_names, path) -> LoadedModel:
    loaded = _torchvision(arch, None, False, state_dict=state, stored_names=class_names)
    loaded.source = f"torchvision {arch} with weights from {path}"
    loaded.name = path.stem
    return loaded


def _builtin_architecture(name: str) -> LoadedModel:
    from cnntool.core.zoo import BUILTIN_MODELS

    entry = BUILTIN_MODELS[name]
    return LoadedModel(module=entry.build(), name=name, preprocessing=entry.preprocessing,
                       class_names=entry.class_names(), source=name, device=None)


def _user_code(spec: str, weights: str | None, trust_code: bool) -> LoadedModel:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ModelLoadError(f"'{spec}' is not FILE.py:NAME or package.module:NAME")
    if target.endswith(".py"):
        if not trust_code:
            raise UntrustedCodeError(f"loading {target} runs the Python code in it; pass "
                                     "--trust-code if you trust that file")
        module = _import_file(Path(target))
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ModelLoadError(f"cannot import '{target}': {exc}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        from torch import nn

        candidates = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                      and (isinstance(v, type) and issubclass(v, nn.Module) or not isinstance(v, type))]
        raise unknown_name(f"name in {target}", attr, candidates)
    try:
        net = factory()
    except Exception as exc:
        raise ModelLoadError(f"calling {spec}() failed: {type(exc).__name__}: {exc}") from exc
    from torch import nn

    if not isinstance(net, nn.Module):
        raise ModelLoadError(f"{spec}() returned a {type(net).__name__}, not a torch.nn.Module")
    source = f"{spec}"
    if weights:
        _load_weights_into(net, weights, spec, trust_code)
        source += f" with weights from {weights}"
    return LoadedModel(module=net, name=attr, preprocessing=_infer_preprocessing(net),
                       class_names=getattr(net, "class_names", None), source=source, device=None)


def _import_file(path: Path):
    if not path.is_file():
        raise ModelLoadError(f"Python file {path} does not exist")
    name = f"cnntool_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ModelLoadError(f"running {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _load_weights_into(module, weights: str, what: str, trust_code: bool) -> None:
    state, _ = checkpoints.split_checkpoint(checkpoints.read_weights(weights, trust_code))
    if not isinstance(state, dict):
        raise ModelLoadError(f"{weights} holds a whole model, not weights for {what}; load it "
                             "directly as the MODEL argument")
    checkpoints.load_state_dict_strictly(module, state, what)


def _infer_preprocessing(module) -> Preprocessing:
    """A user model may carry `preprocessing`; else guess from its first convolution's channels."""
    own = getattr(module, "preprocessing", None)
    if isinstance(own, Preprocessing):
        return own
    from torch import nn

    first_conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is not None and first_conv.in_channels == 1:
        return Preprocessing(crop=(28, 28), resize=28, mean=(0.0,), std=(1.0,), channels=1)
    return IMAGENET
