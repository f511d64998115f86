"""The cnntool commands that dig deeper into a diagnose finding, spelled with the user's own
MODEL (and its loading options) and DATA, ready to paste."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Commands:
    """How to spell follow-up commands for this model and data (the user's own arguments)."""

    model: str  # the MODEL argument with its loading flags, shell-quoted
    data: str

    def top_patches(self, layer: str, units: Sequence[int]) -> str:
        listed = ",".join(str(u) for u in list(units)[:8]) or "0-7"
        return (
            f"cnntool visualize top-patches {self.model} {shlex.quote(self.data)} "
            f"--layer {layer} --units {listed} -o top-{layer}/"
        )

    def activations(self, layer: str) -> str:
        return (
            f"cnntool visualize activations {self.model} {shlex.quote(self.data)} "
            f"--layer {layer} -o maps-{layer}.png"
        )

    def filters(self, layer: str) -> str:
        return (
            f"cnntool visualize filters {self.model} --layer {layer} --format jsonl "
            f"-o filters-{layer}.png"
        )

    def gradcheck(self) -> str:
        return f"cnntool gradcheck {self.model} --per-layer"

    def profile(self) -> str:
        return f"cnntool profile {self.model} --format table"


def spelled_model(spec: str, request) -> str:
    """MODEL and the options that load it as this command did, shell-quoted."""
    return " ".join(shlex.quote(word) for word in [spec, *request_flags(request)])


def request_flags(request) -> list[str]:
    """The command-line words that ask for this request (`--arch NAME`, `--use-ema`…): what
    a follow-up command needs to load MODEL as this one did."""

    def listed(values, form="{}"):
        return values and ",".join(form.format(v) for v in values if v is not None)

    options = [
        ("--arch", request.arch),
        ("--weights", request.weights),
        ("--preprocessing", request.preprocessing_file),
        ("--classes", request.classes),
        ("--input-size", listed(request.input_size)),
        ("--mean", listed(request.mean, "{!r}")),
        ("--std", listed(request.std, "{!r}")),
        (
            "--resize",
            "x".join(map(str, request.resize))
            if isinstance(request.resize, tuple)
            else request.resize,
        ),
        ("--interpolation", request.interpolation),
        ("--channel-order", request.channel_order),
        ("--range", request.input_range),
        ("--num-classes", request.num_classes),
        ("--use-ema", request.use_ema),
        ("--trust-code", request.trust_code),
    ]
    words: list[str] = []
    for flag, value in options:
        if value is True:
            words.append(flag)
        elif value:
            words += [flag, str(value)]
    return words
