"""`cnntool attack fgsm|bim|pgd MODEL DATA`: adversarial examples in [0, 1] pixel space."""

from __future__ import annotations

from pathlib import Path

import click

from cnntool.cli import console
from cnntool.cli.options import (
    eps_values,
    format_option,
    given,
    model_and_data,
    shared_options,
    stacked,
)


@click.group(
    "attack",
    epilog="""\b
Examples:
  cnntool attack fgsm efficientnet_lite0 imagenet-samples --eps 2/255 -o adv/
  cnntool attack fgsm lenet5-mnist mnist-5k --eps 0,0.1,0.2,0.3 --batch-size 500 -o sweep/
  cnntool attack pgd lenet5-mnist-adv mnist-5k --eps 0.3 --steps 40 --step-size 0.01
  cnntool attack auto lenet5-mnist-adv mnist-5k --eps 0.3 --batch-size 500 -o robust/
""",
)
def attack_group():
    """Adversarial examples: FGSM (Goodfellow et al. 2015) and its iterative relatives BIM
    (Kurakin et al.) and PGD (Madry et al.), untargeted or targeted. ε is in [0, 1] pixel units
    (the model's normalization comes after the perturbation). One JSON Lines record per image
    on stdout; a sweep over several ε gives one record per ε and a plot. cw (Carlini–Wagner L2)
    and deepfool take no ε: they look for each image's smallest L2 perturbation. `auto`: an
    AutoAttack-style robust accuracy (APGD-CE, APGD-T, Square)."""


_target_option = click.option(
    "--target",
    metavar="CLASS",
    help="Targeted attack toward a class index, a class name, or 'least-likely'.",
)
_output_options = stacked(
    click.option(
        "-o",
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder for adversarial PNGs (re-classified after saving), triptychs, the sweep "
        "plot (cw, deepfool: the histogram of perturbation norms).",
    ),
    click.option(
        "--triptychs",
        default=8,
        show_default=True,
        type=click.IntRange(0),
        help="With -o: original | perturbation | adversarial figures for the first N images.",
    ),
    click.option(
        "--scale",
        default=1,
        show_default=True,
        type=click.IntRange(1, 4),
        help="With -o: figure scale (2: twice the pixels and text, for print).",
    ),
    click.option(
        "--full-res",
        is_flag=True,
        help="With -o: also upsample the perturbation onto the original photo, save "
        "that PNG and re-classify it through the model's resize and crop.",
    ),
)
_attack_options = stacked(  # MODEL DATA and the options of every attack, after its own
    model_and_data,
    shared_options(format_option()),
    click.option(
        "--eps",
        default="8/255",
        show_default=True,
        callback=eps_values(),
        metavar="EPS[,EPS…]",
        help="Perturbation size in pixel units: 0.007, 8/255, or a comma list for a sweep.",
    ),
    _target_option,
    _output_options,
)
_iterative_options = stacked(
    click.option(
        "--steps", default=10, show_default=True, type=click.IntRange(1), help="Gradient steps."
    ),
    click.option(
        "--step-size",
        callback=eps_values("step size"),
        metavar="SIZE",
        help="Size of each step (default 2.5·ε/steps, Madry et al.).",
    ),
    click.option(
        "--norm",
        type=click.Choice(["linf", "l2"]),
        default="linf",
        show_default=True,
        help="The ball the perturbation stays in (ε is its radius).",
    ),
)


@attack_group.command(
    "fgsm",
    epilog="""\b
Examples:
  cnntool attack fgsm efficientnet_lite0 imagenet-samples --eps 2/255 -o adv/
  cnntool attack fgsm efficientnet_lite0 cat.jpg --target 'giant panda' --eps 8/255
  find photos/ -name '*.jpg' | cnntool attack fgsm resnet18 - --weights r18.pth \\
      | jq -c 'select(.success)'
""",
)
@_attack_options
def fgsm_command(model, data, **options):
    """Fast gradient sign method: x + ε·sign(∇ₓ loss), clamped to [0, 1]; one gradient per
    image. Labels come from DATA when they match the model's classes, else from the model's
    own clean prediction (each record says which in `label_source`)."""
    _run("fgsm", model, data, norm="linf", **options)


@attack_group.command(
    "bim",
    epilog="""\b
Example:
  cnntool attack bim lenet5-mnist mnist-5k --eps 0.3 --steps 10 --batch-size 500
""",
)
@_iterative_options
@_attack_options
def bim_command(model, data, **options):
    """Basic iterative method: FGSM repeated in small steps, each clipped to the ε-ball and to
    [0, 1] (Kurakin et al. 2016); PGD without the random start."""
    _run("bim", model, data, **options)


@attack_group.command(
    "pgd",
    epilog="""\b
Example:
  cnntool attack pgd lenet5-mnist-adv mnist-5k --eps 0.3 --steps 40 --step-size 0.01 --seed 1
""",
)
@_iterative_options
@click.option(
    "--random-start/--no-random-start",
    default=True,
    show_default=True,
    help="Begin at a random point of the ε-ball.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seed of the random start: same seed, same inputs, same output.",
)
@_attack_options
def pgd_command(model, data, **options):
    """Projected gradient descent (Madry et al. 2018): BIM from a random start in the ε-ball,
    L∞ or L2."""
    _run("pgd", model, data, **options)


_minimal_options = stacked(model_and_data, shared_options(format_option()))


@attack_group.command(
    "cw",
    short_help="Carlini–Wagner L2: each image's smallest perturbation found by Adam.",
    epilog="""\b
Examples:
  cnntool attack cw lenet5-mnist mnist-5k --c 10 --lr 0.1 --steps 100 --batch-size 500 -o cw/
  cnntool attack cw efficientnet_lite0 imagenet-samples --target least-likely --kappa 5
""",
)
@click.option(
    "--c",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Weight of the misclassification loss against the squared L2 distance.",
)
@click.option(
    "--kappa",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Confidence κ: the logit margin the adversarial class must win by.",
)
@click.option("--steps", default=50, show_default=True, type=click.IntRange(1), help="Adam steps.")
@click.option(
    "--lr",
    default=0.01,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Adam's learning rate (in tanh space).",
)
@_minimal_options
@_target_option
@_output_options
def cw_command(model, data, c, kappa, steps, lr, **options):
    """Carlini–Wagner L2 (2017): Adam in tanh space minimizes ‖δ‖²₂ + c·f, with the f6 margin
    loss on the logits, and keeps each image's smallest successful perturbation (the image
    itself where none succeeded). torchattacks' CW, with the f6 of Carlini's code."""
    from cnntool.cli.attack_minimal import run_minimal

    run_minimal("cw", model, data, settings=dict(c=c, kappa=kappa, steps=steps, lr=lr), **options)


@attack_group.command(
    "deepfool",
    short_help="DeepFool: steps to the nearest linearized boundary until the class changes.",
    epilog="""\b
Examples:
  cnntool attack deepfool lenet5-mnist mnist-5k --batch-size 500 -o deepfool/
  cnntool attack deepfool efficientnet_lite0 imagenet-samples --candidates 10
""",
)
@click.option(
    "--steps", default=50, show_default=True, type=click.IntRange(1), help="Most steps per image."
)
@click.option(
    "--overshoot",
    default=0.02,
    show_default=True,
    type=click.FloatRange(0),
    help="Each step goes (1 + overshoot) times the distance to the linearized boundary.",
)
@click.option(
    "--candidates",
    type=click.IntRange(2),
    metavar="K",
    help="Only the boundaries with the K classes of highest clean logit (default: every "
    "class; one backward pass per class and step, so 10 is far faster for 1000 classes).",
)
@click.option(
    "--variant",
    type=click.Choice(["paper", "torchattacks"]),
    default="paper",
    show_default=True,
    help="paper: the steps add up and the overshoot scales their total (the authors' code, "
    "foolbox); torchattacks: each step overshot and clamped on its own (it can stall just "
    "short of the boundary).",
)
@_minimal_options
@_output_options
def deepfool_command(model, data, steps, overshoot, candidates, variant, **options):
    """DeepFool (Moosavi-Dezfooli et al. 2016): steps to the nearest boundary of the model
    linearized at the current point until the class changes; untargeted. Equals foolbox's
    L2DeepFoolAttack, or with --variant torchattacks torchattacks' DeepFool."""
    from cnntool.cli.attack_minimal import run_minimal

    settings = dict(steps=steps, overshoot=overshoot, candidates=candidates, variant=variant)
    run_minimal("deepfool", model, data, settings=settings, target=None, **options)


def _run(
    method,
    model,
    data,
    *,
    norm,
    eps,
    target,
    out,
    triptychs,
    full_res,
    scale,
    fmt,
    model_request,
    scan,
    steps=10,
    step_size=None,
    random_start=True,
    seed=None,
) -> None:
    from cnntool.cli.dataset_scan import dataset_scan, finish, say_labels
    from cnntool.errors import CnnToolError
    from cnntool.io import attack_report as report
    from cnntool.io.adversarial import AdversarialFiles
    from cnntool.tasks.attack import attack_method, eps_in_model_units, run_attack
    from cnntool.tasks.predict import nonfinite_warning

    try:  # before the (slow) model loading: a bad ε is a usage error (exit 2)
        attack = attack_method(
            method, eps, steps=steps, step_size=step_size, norm=norm, random_start=random_start
        )
    except CnnToolError as exc:
        raise click.BadParameter(str(exc), param_hint="--eps") from None
    sweep = len(eps) > 1
    for flag, name in ((full_res, "--full-res"), (given("triptychs"), "--triptychs")):
        if flag and (out is None or sweep):
            raise click.UsageError(f"{name} needs -o DIR and a single ε")
    with dataset_scan(model, model_request, data, scan, folders={"-o": out}) as session:
        say_labels(session)
        in_model_units = eps_in_model_units(session.model.preprocessing, eps, norm)
        if in_model_units and session.is_main:
            console.info(in_model_units)
        records = (
            None if sweep else report.ImageRecords(fmt, streaming=not session.shard.distributed)
        )
        files = (
            AdversarialFiles(out, triptychs, norm=norm, scale=scale)
            if out is not None and not sweep
            else None
        )
        run = run_attack(
            session,
            attack,
            eps,
            target,
            title=f"{method} {session.model.name}",
            seed=seed,
            files=files,
            full_res=full_res,
            keep=records.add if records else None,
        )
        finish(session)
        if not session.is_main:
            return
        nonfinite = max(summary.nonfinite for summary in run.summaries)
        if nonfinite:
            console.warn(nonfinite_warning(nonfinite, run.summaries[0].images))
    if sweep:
        report.write_sweep(
            method,
            norm,
            session.model.name,
            session.dataset.name,
            run.summaries,
            fmt,
            out,
            show=console.show_table,
            info=console.info,
            scale=scale,
        )
        return
    records.finish(run.kept)
    for line in report.summary_lines(
        run.summaries[0], method, norm, target is not None, files, run.extras, full_res
    ):
        console.info(line)


def _register_auto() -> None:  # its own module: the evaluation's many options
    from cnntool.cli.attack_auto import auto_command

    attack_group.add_command(auto_command)


_register_auto()
