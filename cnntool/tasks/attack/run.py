"""Attack a scan session's images (core.session: this rank's shard under torchrun) at one or more
ε, and merge every rank's counts and kept results, in dataset order."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from cnntool.core.session import ScanSession
from cnntool.errors import CnnToolError
from cnntool.tasks.attack.full_res import full_resolution
from cnntool.tasks.attack.methods import bim, check_eps, fgsm, pgd
from cnntool.tasks.attack.outcomes import (
    AttackedImage,
    AttackFunction,
    AttackSummary,
    AttackTally,
    attack_batch,
    classify_images,
)
from cnntool.tasks.attack.targets import resolve_target
from cnntool.tasks.predict import label_mapper

METHODS = ("fgsm", "bim", "pgd")


def attack_method(
    method: str,
    eps_values: Sequence[float] = (),
    *,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
) -> AttackFunction:
    """fgsm, or bim or pgd with their settings, as `attack(model, images, labels, eps, targeted=…)`
    (FGSM ignores the settings: it is one L∞ step). Raises CnnToolError for an unknown method
    and for any of `eps_values` that is not a radius of `norm` (check_eps)."""
    for eps in eps_values:
        check_eps(eps, norm)
    if method not in METHODS:
        raise CnnToolError(f"unknown attack '{method}'; use fgsm, bim or pgd")
    if method == "fgsm":
        return fgsm
    settings = dict(steps=steps, step_size=step_size, norm=norm)
    return (
        functools.partial(bim, **settings)
        if method == "bim"
        else functools.partial(pgd, **settings, random_start=random_start)
    )


@dataclass(frozen=True)
class AttackRun:
    # what `keep` returned for each image at each ε (not None), every rank's, by (index, ε)
    kept: list
    summaries: list[AttackSummary]  # one per ε, over every rank
    extras: list  # each rank's `files.counts()` (None without files), in rank order


def run_attack(
    session: ScanSession,
    attack: AttackFunction,
    eps_values: Sequence[float],
    target: str | int | None = None,
    *,
    title: str,
    seed: int | None = None,
    files=None,
    full_res: bool = False,
    keep: Callable[[AttackedImage, dict], Any] | None = None,
    prepare: bool = True,
) -> AttackRun:
    """Attack every image of the session at each ε (collective: every rank calls it).

    - seed: `attack` takes a `generator` (PGD's random start), seeded `seed + rank` on the
      model's device.
    - target: a class index or name, or 'least-likely' (None: untargeted).
    - files (io.adversarial's AdversarialFiles): `files.save_and_judge(outcomes, judge, carry)`
      saves the outcomes, re-classifies what it saved with `judge(images, full_size)` and
      returns one dict of more record fields per outcome (`success_after_save` is counted);
      with `full_res`, `carry(outcome)` is the perturbation upsampled onto the original photo.
      Each rank's `files.counts()` ends up in `extras`.
    - keep(outcome, fields): what to keep of it (None: nothing, e.g. once written out).
    - prepare: run in the session's layout and precision (`session.prepared`), else as it is.
    """
    loaded = session.model
    if seed is not None:
        attack = functools.partial(
            attack, generator=torch.Generator(loaded.device).manual_seed(seed + session.shard.rank)
        )
    chosen = resolve_target(target, loaded.class_names) if target is not None else None
    to_class = label_mapper(session.dataset, loaded.class_names)
    judge = lambda images, full_size: classify_images(loaded, images, preprocess=full_size)  # noqa: E731
    carry = (
        (
            lambda o: full_resolution(
                loaded.preprocessing,
                session.dataset.load(o.index),  # noqa: E731
                o.clean,
                o.adversarial,
            )
        )
        if full_res
        else None
    )
    kept, tally, position = [], AttackTally(eps_values), list(eps_values).index
    with session.prepared(needs_grad=True) if prepare else contextlib.nullcontext() as prepared:
        attacked = (
            attack_batch(
                loaded, session.dataset, batch, attack, eps_values, chosen, to_class, prepared
            )
            for batch in session.batches(title, normalize=False)
        )
        if files is not None and session.shard.distributed:
            attacked = _on_rank_0(session, attacked)  # only rank 0 writes files
        for per_eps in attacked:
            for outcomes in per_eps:
                fields = (
                    files.save_and_judge(outcomes, judge, carry) if files else [{}] * len(outcomes)
                )
                for outcome, found in zip(outcomes, fields, strict=True):
                    tally.add(outcome, found.get("success_after_save"))
                    item = keep(outcome, found) if keep else None
                    if item is not None:
                        kept.append((outcome.index, position(outcome.eps), item))
    parts = session.gather((tally, kept, files.counts() if files else None))
    total = AttackTally(eps_values)
    for part in parts:
        total.merge(part[0])
    every = sorted((row for part in parts for row in part[1]), key=lambda row: row[:2])
    return AttackRun([row[2] for row in every], total.summaries(), [part[2] for part in parts])


def _on_rank_0(
    session: ScanSession, attacked: Iterator[list[list[AttackedImage]]]
) -> Iterator[list[list[AttackedImage]]]:
    """Every rank's attacked batches brought to rank 0 one round at a time (collective: each
    rank attacks its next batch, then they gather; a rank whose shard is done sends None until
    all are): rank 0 gets each round's outcomes per ε in dataset order, so that it alone writes
    the files, and the same ones (the first N triptychs) as one process would; the other ranks
    get nothing. One round's images travel, on the CPU, never a whole shard's."""
    while True:
        per_eps = next(attacked, None)
        mine = (
            None if per_eps is None else [[_portable(o) for o in outcomes] for outcomes in per_eps]
        )
        parts = session.gather(mine)
        if all(part is None for part in parts):
            return
        if session.is_main:
            present = [part for part in parts if part is not None]
            yield [
                sorted((o for part in present for o in part[e]), key=lambda o: o.index)
                for e in range(len(present[0]))
            ]


def _portable(outcome: AttackedImage) -> AttackedImage:
    """The outcome with its pixels as compact CPU copies (a row of a batch would pickle the
    whole batch's storage)."""
    return replace(
        outcome,
        clean=outcome.clean.detach().to("cpu", copy=True),
        adversarial=outcome.adversarial.detach().to("cpu", copy=True),
    )
