"""What real data adds to activation maximization, over a scan session (core.session): a prior
fitted on it (a PCA basis or a mean spectrum) and each unit's best value on it."""

from __future__ import annotations

from cnntool.core.session import ScanSession
from cnntool.tasks.maximize.config import MaximizeConfig, Objective
from cnntool.tasks.maximize.optimize import objective_values
from cnntool.tasks.maximize.parameterizations import ImagePrior
from cnntool.tasks.maximize.spectrum import MAX_PCA_IMAGES, PcaBasis, data_pixels, spectrum_of


def fit_prior(session: ScanSession, config: MaximizeConfig) -> ImagePrior:
    """The prior the session's images give `config.param`: a PCA basis (pca) or a mean
    magnitude spectrum (maco, fourier)."""
    batches = (b.inputs for b in session.batches("prior data", normalize=False))
    if config.param == "pca":
        return ImagePrior(
            basis=PcaBasis.fit(data_pixels(batches, limit=MAX_PCA_IMAGES), config.components)
        )
    window = min(session.model.input_shape[1:]) > 64
    return ImagePrior(spectrum=spectrum_of(batches, decorrelate=True, window=window))


def best_on_data(session: ScanSession, goal: Objective):
    """Each unit's (or class logit's) best value over the session's images."""
    values = objective_values(
        session.module, goal, (b.inputs for b in session.batches("units on DATA"))
    )
    return values.amax(0)
