"""`cnntool attack cw|deepfool` (the commands and their options are in cli/attack.py): the run of
an attack that looks for each image's smallest perturbation, over a scan session."""

from __future__ import annotations

from pathlib import Path

import click

from cnntool.cli import console
from cnntool.cli.options import given


def run_minimal(
    method: str,
    model,
    data,
    *,
    settings: dict,
    target,
    out,
    triptychs,
    full_res,
    scale,
    fmt,
    model_request,
    scan,
) -> None:
    from cnntool.cli.dataset_scan import dataset_scan, finish, say_labels
    from cnntool.errors import CnnToolError
    from cnntool.io import attack_report as report
    from cnntool.io import minimal_report
    from cnntool.io.adversarial import AdversarialFiles
    from cnntool.tasks.attack import run_attack
    from cnntool.tasks.attack.minimal import (
        ImageNorms,
        PerturbationNorms,
        describe_settings,
        method_name,
        minimal_attack,
    )
    from cnntool.tasks.predict import nonfinite_warning

    try:  # before the (slow) model loading
        attack = minimal_attack(method, **settings)
    except CnnToolError as exc:
        raise click.UsageError(str(exc)) from None
    for flag, name in ((full_res, "--full-res"), (given("triptychs"), "--triptychs")):
        if flag and out is None:
            raise click.UsageError(f"{name} needs -o DIR")
    with dataset_scan(model, model_request, data, scan, folders={"-o": out}) as session:
        say_labels(session)
        records = report.ImageRecords(
            fmt,
            streaming=not session.shard.distributed,
            columns=minimal_report.MINIMAL_COLUMNS,
            table=minimal_report.MINIMAL_TABLE,
        )
        files = AdversarialFiles(out, triptychs, norm="l2", scale=scale) if out else None
        run = run_attack(
            session,
            attack,
            (None,),  # no ε: the attack finds each image's own
            target,
            title=f"{method} {session.model.name}",
            files=files,
            full_res=full_res,
            keep=lambda outcome, fields: (ImageNorms.of(outcome), records.add(outcome, fields)),
        )
        finish(session)
        if not session.is_main:
            return
        summary = run.summaries[0]
        if summary.nonfinite:
            console.warn(nonfinite_warning(summary.nonfinite, summary.images))
    records.finish([record for _, record in run.kept if record is not None])
    norms = PerturbationNorms.of(image for image, _ in run.kept)
    described = describe_settings(method, **settings)
    for line in report.summary_lines(
        summary, method, f"L2; {described}", target is not None, files, run.extras, full_res
    ):
        console.info(line)
    console.info(minimal_report.norms_sentence(norms))
    if out is not None:
        plot = Path(out) / "norms.png"
        minimal_report.save_norm_histogram(
            plot,
            norms.l2,
            title=f"{method_name(method)} on {session.model.name}, {session.dataset.name}",
            settings=described,
            failures=norms.failures,
            already=norms.already,
            scale=scale,
        )
        console.info(f"perturbation norms plotted in {plot}")
