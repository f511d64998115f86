"""How a model wants its input: resize, center crop, channels, normalization.

Kept apart from the model so analyses can map model-input pixels back to the original image
(top patches) and undo the normalization (attacks work in [0, 1] pixel space).
"""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


@dataclass(frozen=True)
class Preprocessing:
    """PIL image -> model input tensor.

    The image is converted to `channels` (1 = grayscale, 3 = RGB), its shorter side resized to
    `resize` with `interpolation`, center-cropped to `crop` (H, W), scaled to [0, 1] and
    normalized with `mean` / `std`.
    """

    crop: tuple[int, int]
    resize: int
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    channels: int = 3

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one model input."""
        return (self.channels, self.crop[0], self.crop[1])

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) after the shorter side is resized to `resize` (aspect ratio kept)."""
        # torchvision truncates the long side (int), and so do we, to give identical inputs.
        if width <= height:
            return self.resize, max(1, int(self.resize * height / width))
        return max(1, int(self.resize * width / height)), self.resize

    def crop_offset(self, width: int, height: int) -> tuple[int, int]:
        """(left, top) of the center crop inside the resized image, as torchvision computes it."""
        return self._offset_in_resized(*self.resized_size(width, height))

    def to_original(self, x: float, y: float, width: int, height: int) -> tuple[float, float]:
        """Map a point in model-input pixels back to the original image's pixels."""
        rw, rh = self.resized_size(width, height)
        left, top = self.crop_offset(width, height)
        return (x + left) * width / rw, (y + top) * height / rh

    def to_pixels(self, image: Image.Image):
        """The model input in [0, 1] before normalization: a float tensor (C, H, W)."""
        import torch
        import numpy as np

        image = image.convert("L" if self.channels == 1 else "RGB")
        rw, rh = self.resized_size(*image.size)
        if (rw, rh) != image.size:
            image = image.resize((rw, rh), _PIL_FILTERS[self.interpolation])
        left, top = self._offset_in_resized(rw, rh)
        ch, cw = self.crop
        image = _crop_padded(image, left, top, cw, ch)
        array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()

    def _offset_in_resized(self, rw: int, rh: int) -> tuple[int, int]:
        return int(round((rw - self.crop[1]) / 2.0)), int(round((rh - self.crop[0]) / 2.0))

    def normalize(self, pixels):
        """[0, 1] pixels (..., C, H, W) -> normalized model input."""
        import torch

        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1)
        return (pixels - mean) / std

    def denormalize(self, tensor):
        """Normalized model input -> [0, 1] pixels."""
        import torch

        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor * std + mean

    def __call__(self, image: Image.Image):
        """PIL image -> normalized model input (C, H, W)."""
        return self.normalize(self.to_pixels(image))


def _crop_padded(image: Image.Image, left: int, top: int, width: int, height: int) -> Image.Image:
    """Crop a box that may extend past the image; the outside is filled with zeros (black)."""
    return image.crop((left, top, left + width, top + height))
