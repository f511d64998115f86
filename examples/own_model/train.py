"""Train the example's SmallNet for a few seconds on built-in data and save it the three ways
training scripts usually do, so that every cnntool command can be tried on a real user model.

    python examples/own_model/train.py OUT     # writes OUT/data/test/… and OUT/*.pt* files

Saved (see README "Your own model"):
- OUT/small_net.pth: a bare state dict, with OUT/preprocessing.json and OUT/classes.txt beside
  it (cnntool needs --arch, --preprocessing and --classes for it);
- OUT/small_net_cnntool.pt and OUT/small_net.safetensors: cnntool.save_checkpoint, carrying the
  preprocessing and the class names (only --arch is needed);
- OUT/small_net_lightning.ckpt: what PyTorch Lightning writes: `model.`-prefixed keys and the
  class names in `hyper_parameters` (no preprocessing: give --preprocessing).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import patches, write_test_folder  # noqa: E402
from model import INPUT_SIZE, MEAN, STD, small_net  # noqa: E402

import cnntool  # noqa: E402

EPOCHS = 5
PER_CLASS = 200


def as_input(images) -> torch.Tensor:
    """uint8 N×32×32×3 -> the normalized N×3×32×32 input the model trains on."""
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def train(epochs: int = EPOCHS, per_class: int = PER_CLASS, seed: int = 0):
    """(trained model in eval mode, class names, test accuracy on the held-out patches)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # such a small net trains faster on one thread than on a busy two
    try:
        return _train(epochs, per_class, seed)
    finally:
        torch.set_num_threads(threads)


def _train(epochs: int, per_class: int, seed: int):
    torch.manual_seed(seed)
    images, labels, names = patches("train", per_class, seed)
    inputs, targets = as_input(images), torch.from_numpy(labels)
    model = small_net(len(names))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            x = inputs[batch]
            flip = torch.rand(len(batch), generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
            optimizer.zero_grad()
            loss_fn(model(x), targets[batch]).backward()
            optimizer.step()
    model.eval()
    test_images, test_labels, _ = patches("test", 25, seed)
    with torch.no_grad():
        predicted = model(as_input(test_images)).argmax(1)
    accuracy = float((predicted == torch.from_numpy(test_labels)).float().mean())
    return model, names, accuracy


def preprocessing() -> cnntool.Preprocessing:
    """How the model was trained: 32×32 patches as they are, its own mean and std."""
    return cnntool.Preprocessing.from_dict(
        {
            "input_size": list(INPUT_SIZE),
            "resize": 32,
            "interpolation": "bilinear",
            "mean": list(MEAN),
            "std": list(STD),
        }
    )


def save_three_ways(model: nn.Module, names: list[str], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "state_dict": out / "small_net.pth",
        "preprocessing": out / "preprocessing.json",
        "classes": out / "classes.txt",
        "cnntool": out / "small_net_cnntool.pt",
        "safetensors": out / "small_net.safetensors",
        "lightning": out / "small_net_lightning.ckpt",
    }
    # 1. the bare state dict, the preprocessing and class names in files of their own
    torch.save(model.state_dict(), paths["state_dict"])
    paths["preprocessing"].write_text(json.dumps(preprocessing().to_dict(), indent=2) + "\n")
    paths["classes"].write_text("\n".join(names) + "\n")
    # 2. one file that carries everything
    cnntool.save_checkpoint(
        model, paths["cnntool"], preprocessing=preprocessing(), class_names=names
    )
    cnntool.save_checkpoint(
        model, paths["safetensors"], preprocessing=preprocessing(), class_names=names
    )
    # 3. a PyTorch Lightning checkpoint: the LightningModule held the net as `self.model`
    torch.save(
        {
            "epoch": EPOCHS,
            "global_step": EPOCHS * 50,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"num_classes": len(names), "class_names": names, "lr": 3e-3},
            "optimizer_states": [],
            "lr_schedulers": [],
        },
        paths["lightning"],
    )
    return paths


def main(out: Path) -> None:
    classes = write_test_folder(out / "data" / "test")
    model, names, accuracy = train()
    assert names == classes
    paths = save_three_ways(model, names, out)
    print(
        f"trained SmallNet on {len(names)} classes: {accuracy:.1%} of the held-out test "
        f"patches right (chance {1 / len(names):.1%}); saved "
        f"{', '.join(str(p) for p in paths.values())}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "own-model-out"))
