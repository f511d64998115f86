"""Carry a perturbation found at the model's input size back to the original photo.

The model sees a resized, center-cropped copy of the image; an attack therefore perturbs that
copy. `full_resolution` upsamples the perturbation (nearest neighbour, so every model pixel's
±ε step covers the block of original pixels it came from) onto the part of the original that
the crop shows, leaves the rest of the photo untouched, and returns the 8-bit image one would
publish. `scan.classify_images` re-checks such files through the model's full preprocessing (resize
and crop included), which is how anyone would use them.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from cnntool.core.preprocessing import Preprocessing


def crop_extent(preprocessing: Preprocessing, width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) in original pixels of what the model's center crop shows; it
    reaches past the image when the image is smaller than the crop (padded with zeros there)."""
    crop_h, crop_w = preprocessing.crop
    left, top = preprocessing.to_original(0, 0, width, height)
    right, bottom = preprocessing.to_original(crop_w, crop_h, width, height)
    return round(left), round(top), round(right), round(bottom)


def full_resolution(
    preprocessing: Preprocessing, original: Image.Image, clean: Tensor, adversarial: Tensor
) -> Image.Image:
    """The original image plus the upsampled perturbation `adversarial - clean` (both [0, 1]
    pixels at the model's input size, C×H×W), clamped to [0, 1] and quantized to 8 bits."""
    mode = preprocessing.pil_mode
    photo = np.asarray(preprocessing.convert(original), dtype=np.float32) / 255.0
    if photo.ndim == 2:
        photo = photo[:, :, None]
    height, width = photo.shape[:2]
    left, top, right, bottom = crop_extent(preprocessing, width, height)
    delta = (adversarial - clean).detach().float().cpu()[None]
    upsampled = F.interpolate(delta, size=(bottom - top, right - left), mode="nearest")
    upsampled = upsampled[0].permute(1, 2, 0).numpy()
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
    photo[y0:y1, x0:x1] += upsampled[y0 - top : y1 - top, x0 - left : x1 - left]
    # NaN (a diverged model's perturbation) becomes 0 here, not an arbitrary byte and a numpy
    # "invalid value encountered in cast" warning
    array = (np.clip(np.nan_to_num(photo, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(array[:, :, 0] if mode == "L" else array, mode=mode)
