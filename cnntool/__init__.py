"""cnntool: look inside trained convolutional networks.

The public Python API. Names are re-exported lazily so that `import cnntool` (and therefore
`cnntool --help`) does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "CnnToolError": "cnntool.errors",
    "load_model": "cnntool.core.loading.models",
    "LoadedModel": "cnntool.core.loading.models",
    "Preprocessing": "cnntool.core.preprocessing",
    "PreprocessingOptions": "cnntool.core.loading.preprocessing_sources",
    "save_checkpoint": "cnntool.core.loading.checkpoints",
    "check_forward": "cnntool.core.loading.models",
    "map_labels": "cnntool.core.class_indices",
    "read_class_names_file": "cnntool.core.loading.class_names",
    "list_models": "cnntool.core.loading.models",
    "load_image": "cnntool.core.images",
    "open_data": "cnntool.core.data",
    "resolve_layer": "cnntool.core.layers",
    "layer_aliases": "cnntool.core.layers",
    "capture": "cnntool.core.hooks",
    "substitute_activation_backward": "cnntool.core.hooks",
    "predict": "cnntool.tasks.predict",
    "profile": "cnntool.tasks.profile",
    "layers": "cnntool.tasks.profile",
    "receptive_fields": "cnntool.core.receptive_field",
    "fgsm": "cnntool.tasks.attack",
    "bim": "cnntool.tasks.attack",
    "pgd": "cnntool.tasks.attack",
    "cw": "cnntool.tasks.attack",
    "deepfool": "cnntool.tasks.attack",
    "attack_dataset": "cnntool.tasks.dataset_scans",
    "AttackedImage": "cnntool.tasks.attack",
    "AttackSummary": "cnntool.tasks.attack",
    "filters": "cnntool.tasks.filters",
    "fold_batchnorm": "cnntool.tasks.filters",
    "feature_maps": "cnntool.tasks.activations",
    "top_patches": "cnntool.tasks.dataset_scans",
    "TopPatches": "cnntool.tasks.top_patches",
    "features": "cnntool.tasks.dataset_scans",
    "FeatureSet": "cnntool.core.featureset",
    "diagnose": "cnntool.tasks.dataset_scans",
    "compare": "cnntool.tasks.dataset_scans",
    "CkaResult": "cnntool.tasks.compare",
    "embed": "cnntool.tasks.embed",
    "EmbedSettings": "cnntool.tasks.embed",
    "ScanSession": "cnntool.core.session",
    "Consumer": "cnntool.core.session",
    "distributed": "cnntool.core.sharding",
    "shard_stream": "cnntool.core.sharding",
    "deconv": "cnntool.tasks.projection",
    "guided_backprop": "cnntool.tasks.projection",
    "saliency": "cnntool.tasks.projection",
    "project": "cnntool.tasks.projection",
    "Projection": "cnntool.tasks.projection",
    "Target": "cnntool.tasks.projection",
    "SmoothGrad": "cnntool.tasks.projection",
    "integrated_gradients": "cnntool.tasks.projection",
    "IntegratedGradients": "cnntool.tasks.integrated_gradients",
    "maximize": "cnntool.tasks.maximize",
    "MaximizeConfig": "cnntool.tasks.maximize",
    "Synthesized": "cnntool.tasks.maximize",
    "gradcheck": "cnntool.tasks.gradcheck",
    "GradcheckResult": "cnntool.tasks.gradcheck",
    "TensorResult": "cnntool.tasks.gradcheck",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cnntool' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
