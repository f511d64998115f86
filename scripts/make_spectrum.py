"""Rebuild cnntool/data/natural_spectrum.npy, the natural-image spectrum of `--param maco`.

The photos are the ones the sample packages ship: scikit-image's, scikit-learn's and
matplotlib's (`cnntool.core.samples.photos`, colour ones only) and foolbox's 20 ImageNet
photos. Each is resized (bicubic, antialiased) so that its shorter side is 256 px and
center-cropped to 256 x 256; the mean Fourier magnitude is taken in lucid's decorrelated colour
space through a Hann window (`spectrum.spectrum_of`), its +k and -k vertical frequencies are
averaged into one quadrant, and the quadrant is scaled to a peak of 1 and stored as float16
(3 x 129 x 129, 100 kB). The result depends only on those files: the test suite rebuilds it
and compares.

    .venv/bin/python scripts/make_spectrum.py [-o cnntool/data/natural_spectrum.npy]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cnntool.core.images import load_image  # noqa: E402
from cnntool.core.preprocessing import Preprocessing  # noqa: E402
from cnntool.core.samples import imagenet_samples, photos  # noqa: E402
from cnntool.tasks.maximize.spectrum import SPECTRUM_SIZE, fold_quadrant, spectrum_of  # noqa: E402

DEFAULT_OUTPUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "cnntool",
    "data",
    "natural_spectrum.npy",
)


def photo_paths() -> list[str]:
    """The colour photos of the sample packages, in a fixed order."""
    from PIL import Image

    paths = [p for p in photos() if Image.open(p).mode == "RGB"]
    return paths + [path for path, _ in imagenet_samples()]


def natural_spectrum(paths: list[str]) -> np.ndarray:
    """The float16 quadrant (3, 129, 129) of the mean magnitude of `paths`, peak 1."""
    crop = Preprocessing(
        crop=(SPECTRUM_SIZE, SPECTRUM_SIZE), resize=SPECTRUM_SIZE, interpolation="bicubic"
    )
    images = (crop.to_pixels(load_image(path))[None] for path in paths)
    quadrant = fold_quadrant(spectrum_of(images, decorrelate=True, window=True).double())
    return (quadrant / quadrant.max()).numpy().astype(np.float16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    paths = photo_paths()
    spectrum = natural_spectrum(paths)
    np.save(args.output, spectrum)
    print(f"{args.output}: {spectrum.shape} from {len(paths)} photos")


if __name__ == "__main__":
    main()
