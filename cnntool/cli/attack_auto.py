"""`cnntool attack auto MODEL DATA`: an AutoAttack-style robustness evaluation (APGD-CE, APGD-T,
Square) in [0, 1] pixel space."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from cnntool.cli import console
from cnntool.cli.options import (
    eps_values,
    format_option,
    given,
    limit_option,
    model_and_data,
    names_option,
    shared_options,
)


@click.command(
    "auto",
    epilog="""\b
Examples:
  cnntool attack auto lenet5-mnist-adv mnist-5k --eps 0.3 --batch-size 500 -o robust/
  cnntool attack auto model.pt --arch resnet18 cifar/ --norm l2 --queries 1000
  cnntool attack auto lenet5-mnist mnist-5k --eps 0.3 --attacks apgd-ce,square --steps 20
""",
)
@click.option(
    "--norm",
    type=click.Choice(["linf", "l2"]),
    default="linf",
    show_default=True,
    help="The ball the perturbation stays in.",
)
@click.option(
    "--eps",
    callback=eps_values("ε"),
    metavar="EPS",
    help="Its radius in [0, 1] pixel units: 0.3, 8/255 (default: RobustBench's standard, "
    "8/255 for linf, 0.5 for l2).",
)
@click.option(
    "--attacks",
    default="apgd-ce,apgd-t,square",
    show_default=True,
    callback=names_option,
    metavar="NAME,…",
    help="Which attacks, in this order: apgd-ce, apgd-t, square.",
)
@click.option(
    "--steps", default=100, show_default=True, type=click.IntRange(1), help="APGD iterations."
)
@click.option(
    "--restarts",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="APGD runs from random starts (APGD-T: per target class).",
)
@click.option(
    "--target-classes",
    default=9,
    show_default=True,
    type=click.IntRange(1),
    help="APGD-T: aim at the classes the clean image ranks 2nd, 3rd, … up to this many.",
)
@click.option(
    "--queries",
    default=5000,
    show_default=True,
    type=click.IntRange(1),
    help="Square: forward passes per image.",
)
@click.option(
    "--p-init",
    default=0.8,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Square: share of the pixels its first squares cover.",
)
@click.option(
    "--independent",
    is_flag=True,
    help="Run every attack on every correctly classified image (each attack's own robust "
    "accuracy; costs up to all attacks' time), not only on those the ones before left standing.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the random starts and searches: same seed, same inputs, same output.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for robustness.png (a bar chart), robustness.json, the worst-case adversarial "
    "PNGs (re-classified after saving) and triptychs.",
)
@click.option(
    "--triptychs",
    default=8,
    show_default=True,
    type=click.IntRange(0),
    help="With -o: original | perturbation | adversarial figures for the first N images.",
)
@click.option(
    "--scale",
    default=1,
    show_default=True,
    type=click.IntRange(1, 4),
    help="With -o: figure scale (2: twice the pixels and text, for print).",
)
@limit_option
@model_and_data
@shared_options(format_option())
def auto_command(model, data, **options):
    """AutoAttack-style robust accuracy (Croce & Hein 2020): APGD-CE, APGD-T with the targeted
    DLR loss, and the gradient-free Square attack as the check for gradient masking. An image
    counts as robust only if every attack fails on it; each record keeps its worst case (the
    attack that broke it or came closest, the margin, the perturbation's norms). Warns when
    Square breaks images on which the gradient attacks failed."""
    _run(model, data, **options)


def _run(
    model,
    data,
    *,
    norm,
    eps,
    attacks,
    steps,
    restarts,
    target_classes,
    queries,
    p_init,
    independent,
    seed,
    limit,
    out,
    triptychs,
    scale,
    fmt,
    model_request,
    scan,
) -> None:
    from cnntool.cli.dataset_scan import dataset_scan, finish, say_labels
    from cnntool.errors import CnnToolError
    from cnntool.io import attack_report, auto_report
    from cnntool.io.adversarial import AdversarialFiles
    from cnntool.io.figures import eps_label
    from cnntool.tasks.attack import check_eps, run_attack
    from cnntool.tasks.attack.auto import STANDARD_EPS, TITLES, AutoSettings, AutoTally, auto_attack
    from cnntool.tasks.predict import nonfinite_warning

    standard = eps is None
    eps = STANDARD_EPS[norm] if standard else eps
    try:  # before the (slow) model loading: bad settings are usage errors (exit 2)
        check_eps(eps, norm)
    except CnnToolError as exc:
        raise click.BadParameter(str(exc), param_hint="--eps") from None
    try:
        settings = AutoSettings(
            norm=norm,
            attacks=tuple(attacks or ()),
            steps=steps,
            restarts=restarts,
            target_classes=target_classes,
            queries=queries,
            p_init=p_init,
            independent=independent,
        )
    except CnnToolError as exc:
        raise click.BadParameter(str(exc), param_hint="--attacks") from None
    if given("triptychs") and out is None:
        raise click.UsageError("--triptychs needs -o DIR")
    with dataset_scan(
        model, model_request, data, scan, limit=limit, folders={"-o": out}
    ) as session:
        say_labels(session)
        if session.model.num_outputs is not None:
            settings = settings.for_classes(session.model.num_outputs)
        console.info(
            f"{', '.join(settings.describe())} at {auto_report.NORM_NAMES[norm]} "
            f"ε = {eps_label(eps)}"
            + (" (RobustBench's standard; --eps to change)" if standard else "")
            + f", seed {seed}"
        )
        records = attack_report.ImageRecords(
            fmt,
            streaming=not session.shard.distributed,
            columns=auto_report.RECORD_COLUMNS_AUTO,
            table=auto_report.IMAGE_TABLE,
        )
        files = AdversarialFiles(out, triptychs, norm=norm, scale=scale) if out else None

        def keep(outcome, fields):  # the record (unless written already) and what the tally needs
            correct = outcome.finite and outcome.clean_pred == outcome.label
            return records.add(outcome, fields), correct, outcome.details

        run = run_attack(
            session,
            functools.partial(auto_attack, settings=settings),
            [eps],
            title=f"auto {session.model.name}",
            seed=seed,
            files=files,
            keep=keep,
        )
        finish(session)
        if not session.is_main:
            return
        summary = run.summaries[0]
        if summary.nonfinite:
            console.warn(nonfinite_warning(summary.nonfinite, summary.images))
    records.finish([record for record, _, _ in run.kept if record is not None])
    tally = AutoTally(settings.attacks, settings.independent)
    for _, correct, details in run.kept:
        tally.add(correct, details)
    for line in auto_report.summary_lines(
        tally,
        norm=norm,
        eps=eps,
        settings=settings.describe(),
        label_sources=summary.label_sources(),
    ):
        console.info(line)
    rows = auto_report.attack_rows(tally, TITLES, tally.accuracy(tally.clean_correct))
    console.show_table(
        f"robust accuracy of {session.model.name} at {auto_report.NORM_NAMES[norm]} "
        f"ε = {eps_label(eps)}",
        auto_report.SUMMARY_TABLE,
        rows,
    )
    warning = auto_report.masking_warning(tally, TITLES)
    if warning:
        console.warn(warning)
    if out is None:
        return
    json_path, chart = auto_report.write_files(
        out,
        rows,
        tally=tally,
        model_name=session.model.name,
        data_name=session.dataset.name,
        norm=norm,
        eps=eps,
        settings={**vars(settings), "seed": seed, "attacks": list(settings.attacks)},
        scale=scale,
    )
    console.info(f"robust accuracy per attack in {chart} and {json_path}")
    for line in attack_report.summary_lines(summary, "auto", norm, False, files, run.extras)[1:]:
        console.info(line)
    if summary.saved:
        console.info(
            f"read back from the 8-bit PNGs, {summary.successes_after_save} of {summary.saved} "
            f"images are misclassified ({summary.successes} before saving)"
        )
