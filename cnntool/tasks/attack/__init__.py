"""Adversarial examples: FGSM and its iterative and targeted relatives, in [0, 1] pixel space.

- methods: `fgsm`, `bim`, `pgd` on a batch of tensors; `classify`; `check_eps`; `PixelModel`
  (a model of [0, 1] pixels as an nn.Module, for attack libraries).
- targets: a target class by index or name, or each image's least-likely class.
- outcomes: a whole dataset at one or more ε, with per-image outcomes and per-ε summaries.
- run: a scan session's images (every rank's under torchrun) attacked, judged and merged.
- cw, deepfool: the minimal-perturbation attacks (Carlini–Wagner L2, DeepFool); minimal: them
  by name with their settings, and the statistics of their per-image norms.
"""

from cnntool.tasks.attack.cw import cw
from cnntool.tasks.attack.deepfool import deepfool
from cnntool.tasks.attack.methods import (
    NORMS,
    PixelModel,
    bim,
    check_eps,
    classify,
    eps_in_model_units,
    fgsm,
    pgd,
)
from cnntool.tasks.attack.outcomes import (
    AttackedImage,
    AttackSummary,
    AttackTally,
    attack_batch,
    attack_dataset,
    classify_images,
    succeeded,
)
from cnntool.tasks.attack.run import METHODS, AttackRun, attack_method, run_attack
from cnntool.tasks.attack.targets import LEAST_LIKELY, resolve_target, target_classes

__all__ = [
    "NORMS",
    "LEAST_LIKELY",
    "METHODS",
    "AttackedImage",
    "AttackRun",
    "PixelModel",
    "AttackSummary",
    "AttackTally",
    "attack_batch",
    "attack_dataset",
    "attack_method",
    "bim",
    "check_eps",
    "classify",
    "classify_images",
    "eps_in_model_units",
    "cw",
    "deepfool",
    "fgsm",
    "pgd",
    "resolve_target",
    "run_attack",
    "succeeded",
    "target_classes",
]
