"""A timm fine-tune as a user makes one, in seconds: timm's `test_efficientnet` (ImageNet's
mean and std, 160 px, bicubic, crop_pct 0.95 in its pretrained_cfg) trained for 11 classes on
32-px images with mean and std 0.5, then saved the three ways timm users save: `save_for_hf`
(config.json beside model.safetensors), train.py's CheckpointSaver (the `args` Namespace inside)
and a bare state dict.

The task: 11 hues. Each image is a disc of its class's hue on a noisy grey background, so the
colour statistics matter and a model fed ImageNet's mean and std instead of 0.5 gets many wrong.
Test images are 40×48 PNGs: the saved feed (crop_pct 0.8: resize 40, crop 32) crops them; the
pretrained feed (resize 168, crop 160) would enlarge them 4×."""

from __future__ import annotations

import argparse
import colorsys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ARCH = "test_efficientnet"
CLASSES = 11
FEED = {
    "input_size": (3, 32, 32),
    "interpolation": "bilinear",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "crop_pct": 0.8,
}
HUES = torch.tensor(
    [colorsys.hsv_to_rgb(k / CLASSES, 0.9, 0.9) for k in range(CLASSES)], dtype=torch.float32
)


def discs(per_class: int, height: int, width: int, generator: torch.Generator):
    """[0, 1] images (N, 3, H, W) and labels: a disc of radius 8 of the class's hue, its centre
    within 4 px of the image's, on grey 0.5 with noise σ 0.15."""
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    images = []
    for label in labels:
        cy, cx = (torch.tensor([height, width]) // 2) + torch.randint(
            -4, 5, (2,), generator=generator
        )
        disc = (((yy - cy) ** 2 + (xx - cx) ** 2) < 64).float()
        background = 0.5 + 0.15 * torch.randn(3, height, width, generator=generator)
        images.append((background * (1 - disc) + HUES[label][:, None, None] * disc).clamp(0, 1))
    return torch.stack(images), labels


def fine_tune(steps: int = 40):
    """timm's test_efficientnet trained on 32-px discs with mean/std 0.5 (a few seconds)."""
    import timm

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = timm.create_model(ARCH, pretrained=False, num_classes=CLASSES)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        x, y = discs(2, 32, 32, generator)
        loss = torch.nn.functional.cross_entropy(model((x - 0.5) / 0.5), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), optimizer


def write_test_images(folder: Path, per_class: int = 4) -> Path:
    """Labelled 40×48 PNGs in class folders 00…10 (sorted order = class index)."""
    generator = torch.Generator().manual_seed(1)
    images, labels = discs(per_class, 40, 48, generator)
    for n, (image, label) in enumerate(zip(images, labels, strict=True)):
        (folder / f"{int(label):02d}").mkdir(parents=True, exist_ok=True)
        array = (image.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        Image.fromarray(array).save(folder / f"{int(label):02d}" / f"{n:03d}.png")
    return folder


def save_all_ways(model, optimizer, out: Path) -> dict[str, Path]:
    """The fine-tune saved by timm's save_for_hf, by train.py's CheckpointSaver and as a bare
    state dict; train.py's args are an argparse.Namespace as train.py's parser makes them."""
    from timm.models import save_for_hf
    from timm.utils import CheckpointSaver

    hub = out / "hub"
    save_for_hf(model, str(hub), safe_serialization=True, data_config=dict(FEED))
    args = argparse.Namespace(
        model=ARCH,
        num_classes=CLASSES,
        img_size=None,
        input_size=list(FEED["input_size"]),
        in_chans=None,
        mean=list(FEED["mean"]),
        std=list(FEED["std"]),
        crop_pct=FEED["crop_pct"],
        interpolation=FEED["interpolation"],
        train_interpolation="random",
        gp=None,
        model_kwargs={},
        lr=3e-3,
        epochs=1,
        data_dir="data/",
        output="output/",
    )
    runs = out / "train"
    runs.mkdir()
    saver = CheckpointSaver(model, optimizer, args=args, checkpoint_dir=str(runs))
    saver.save_checkpoint(epoch=0, metric=0.9)
    plain = out / "ft.pth"
    torch.save(model.state_dict(), plain)
    return {
        "hub": hub,
        "hub_weights": hub / "model.safetensors",
        "train": runs / "model_best.pth.tar",
        "plain": plain,
    }
