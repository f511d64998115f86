"""Activation maximization: synthesize the inputs that most excite units or classes.

Gradient ascent on a parameterized image (Erhan et al. 2009; Simonyan et al. 2014), one image
per unit, all in one batch. What makes the images look like something:
- colour models: MACO (Fel et al. 2023), the phase of a natural-image spectrum under random
  crops, with its transparency map; or lucid's Fourier recipe (Olah et al. 2017);
- small grayscale models: pixels with L2 decay, total variation and blur (Yosinski et al.
  2015), or, given prior data, a PCA basis of it with a Gaussian prior;
- a photo as the start and a penalty that keeps the result near it: feature accentuation
  (Hamblin et al. 2024).
A second model judges class images (`judge_images`); unit images are compared with the unit's
best over real data (`objective_values`).

Modules: config (what and how), parameterizations (the learnable image), spectrum (the priors),
transforms (random views, regularizers), optimize (the loop), judge (verdicts).
"""

from cnntool.tasks.maximize.config import (
    PARAMETERIZATIONS,
    MaximizeConfig,
    Objective,
    Synthesized,
    accentuation_defaults,
    data_prior_defaults,
    imagenet_defaults,
    lucid_defaults,
    maximize_config,
    objective,
    objective_for,
    small_defaults,
    thumbnail_defaults,
    with_overrides,
)
from cnntool.tasks.maximize.judge import (
    Verdict,
    default_judge,
    judge_class_images,
    judge_images,
    unit_records,
)
from cnntool.tasks.maximize.optimize import maximize, objective_values
from cnntool.tasks.maximize.parameterizations import ImagePrior
from cnntool.tasks.maximize.spectrum import PcaBasis, spectrum_of
from cnntool.tasks.maximize.transforms import gaussian_blur, penalized, view

__all__ = [
    "PARAMETERIZATIONS",
    "MaximizeConfig",
    "Objective",
    "Synthesized",
    "accentuation_defaults",
    "data_prior_defaults",
    "imagenet_defaults",
    "lucid_defaults",
    "objective",
    "small_defaults",
    "thumbnail_defaults",
    "with_overrides",
    "maximize_config",
    "objective_for",
    "Verdict",
    "default_judge",
    "judge_class_images",
    "judge_images",
    "unit_records",
    "maximize",
    "objective_values",
    "ImagePrior",
    "PcaBasis",
    "spectrum_of",
    "gaussian_blur",
    "penalized",
    "view",
]
