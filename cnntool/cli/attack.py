"""`cnntool attack fgsm|bim|pgd MODEL DATA`: adversarial examples in [0, 1] pixel space."""
from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import click

from cnntool.cli import console
from cnntool.cli.options import data_options, format_option, given, model_options, output_options
from cnntool.io.records import Column, percent, write_records

RECORD_COLUMNS = ["path", "eps", "label", "label_source", "target", "clean_pred", "clean_name",
                  "clean_conf", "adv_pred", "adv_name", "adv_conf", "success", "linf", "l2",
                  "file", "success_after_save", "full_res_file", "full_res_pred", "success_full_res",
                  "upscaled_from"]
SWEEP_COLUMNS = ["model", "attack", "norm", "eps", "images", "labels_from_dataset",
                 "clean_accuracy", "adv_accuracy", "success_rate"]


class EpsList(click.ParamType):
    """'0.007', '8/255' or a comma list of them ('0,1/255,2/255') -> a tuple of floats."""

    name = "EPS[,EPS…]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            # Fraction parses both '0.007' and '8/255'; float() of it is the nearest double,
            # the same number Python gives for the literal 8/255.
            values = tuple(float(Fraction(part.strip())) for part in str(value).split(","))
        except OverflowError:
            self.fail(f"'{value}' is too large a number", param, ctx)
        except (ValueError, ZeroDivisionError):
            self.fail(f"'{value}' is not a number like 0.007 or 8/255, or a comma list of them",
                      param, ctx)
        return values


@click.group("attack", epilog="""Examples:

  cnntool attack fgsm efficientnet_lite0 imagenet-samples --eps 2/255 -o adv/

  cnntool attack fgsm lenet5-mnist mnist-5k --eps 0,0.1,0.2,0.3 --batch-size 500 -o sweep/

  cnntool attack pgd lenet5-mnist-adv mnist-5k --eps 0.3 --steps 40 --step-size 0.01
""")
def attack_group():
    """Adversarial examples: FGSM (Goodfellow et al. 2015) and its iterative relatives BIM
    (Kurakin et al.) and PGD (Madry et al.), untargeted or targeted. ε is in [0, 1] pixel units
    (the model's normalization comes after the perturbation). One JSON Lines record per image
    on stdout; a sweep over several ε gives one record per ε and a plot."""


def _attack_options(func):
    """Options every attack takes (applied bottom-up, so they list in this order)."""
    for option in reversed([
        click.option("--eps", default="8/255", show_default=True, type=EpsList(),
                     help="Perturbation size in pixel units: 0.007, 8/255, or a comma list for a sweep."),
        click.option("--target", metavar="CLASS",
                     help="Targeted attack toward a class index, a class name, or 'least-likely'."),
        click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path),
                     help="Folder for adversarial PNGs (re-classified after saving), triptychs, the sweep plot."),
        click.option("--triptychs", default=8, show_default=True, type=click.IntRange(0),
                     help="With -o: original | perturbation | adversarial figures for the first N images."),
        click.option("--full-res", is_flag=True,
                     help="With -o: also upsample the perturbation onto the original photo, save "
                          "that PNG and re-classify it through the model's resize and crop."),
    ]):
        func = option(func)
    return format_option()(model_options(data_options(output_options(func))))


def _iterative_options(func):
    for option in reversed([
        click.option("--steps", default=10, show_default=True, type=click.IntRange(1),
                     help="Gradient steps."),
        click.option("--step-size", type=EpsList(), metavar="SIZE",
                     help="Size of each step (default 2.5·ε/steps, Madry et al.)."),
        click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True,
                     help="The ball the perturbation stays in (ε is its radius)."),
    ]):
        func = option(func)
    return func


@attack_group.command("fgsm", epilog="""Examples:

  cnntool attack fgsm efficientnet_lite0 imagenet-samples --eps 2/255 -o adv/

  cnntool attack fgsm efficientnet_lite0 cat.jpg --target 'giant panda' --eps 8/255

  find photos/ -name '*.jpg' | cnntool attack fgsm resnet18 - --weights r18.pth | jq -c 'select(.success)'
""")
@click.argument("model")
@click.argument("data")
@_attack_options
def fgsm_command(model, data, **options):
    """Fast gradient sign method: x + ε·sign(∇ₓ loss), clamped to [0, 1]; one gradient per
    image. Labels come from DATA when they match the model's classes, else from the model's
    own clean prediction (each record says which in `label_source`)."""
    from cnntool.tasks.attack import fgsm

    _run("fgsm", fgsm, model, data, norm="linf", **options)


@attack_group.command("bim", epilog="""Example:

  cnntool attack bim lenet5-mnist mnist-5k --eps 0.3 --steps 10 --batch-size 500
""")
@click.argument("model")
@click.argument("data")
@_iterative_options
@_attack_options
def bim_command(model, data, steps, step_size, norm, **options):
    """Basic iterative method: FGSM repeated in small steps, each clipped to the ε-ball and to
    [0, 1] (Kurakin et al. 2016); PGD without the random start."""
    import functools

    from cnntool.tasks.attack import bim

    attack = functools.partial(bim, steps=steps, step_size=_single(step_size), norm=norm)
    _run("bim", attack, model, data, norm=norm, **options)


@attack_group.command("pgd", epilog="""Example:

  cnntool attack pgd lenet5-mnist-adv mnist-5k --eps 0.3 --steps 40 --step-size 0.01 --seed 1
""")
@click.argument("model")
@click.argument("data")
@_iterative_options
@click.option("--random-start/--no-random-start", default=True, show_default=True,
              help="Begin at a random point of the ε-ball.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the random start: same seed, same inputs, same output.")
@_attack_options
def pgd_command(model, data, steps, step_size, norm, random_start, seed, **options):
    """Projected gradient descent (Madry et al. 2018): BIM from a random start in the ε-ball,
    L∞ or L2."""
    import functools

    from cnntool.tasks.attack import pgd

    attack = functools.partial(pgd, steps=steps, step_size=_single(step_size), norm=norm,
                               random_start=random_start)
    _run("pgd", attack, model, data, norm=norm, seed=seed, **options)


def _single(values: tuple[float, ...] | None) -> float | None:
    if values is not None and len(values) != 1:
        raise click.BadParameter("give one step size", param_hint="--step-size")
    return None if values is None else values[0]


def _run(method, attack, model, data, *, norm, eps, target, out, triptychs, full_res, fmt,
         model_request, scan, seed=None) -> None:
    from cnntool.cli.session import dataset_scan, finish, tidy
    from cnntool.errors import CnnToolError
    from cnntool.io.writers import RecordWriter
    from cnntool.io.adversarial import AdversarialFiles
    from cnntool.io.figures import eps_label
    from cnntool.tasks.attack import (AttackTally, attack_batch, check_eps, classify_images,
                                      resolve_target)
    from cnntool.tasks.attack.full_res import full_resolution
    from cnntool.tasks.predict import label_mapper

    for value in eps:  # before the (slow) model loading: a usage error (exit 2)
        try:
            check_eps(value, norm)
        except CnnToolError as exc:
            raise click.BadParameter(str(exc), param_hint="--eps") from None
    sweep = len(eps) > 1
    if full_res and (out is None or sweep):
        raise click.UsageError("--full-res needs -o DIR and a single ε")
    if given("triptychs") and (out is None or sweep):
        raise click.UsageError("--triptychs needs -o DIR and a single ε")
    tidy(out, folders=True)
    with dataset_scan(model, model_request, data, scan) as session:
        loaded, dataset = session.model, session.dataset
        if seed is not None:  # the random start is drawn on the model's device, per rank
            import functools

            import torch

            generator = torch.Generator(loaded.device).manual_seed(seed + session.shard.rank)
            attack = functools.partial(attack, generator=generator)
        chosen_target = resolve_target(target, loaded.class_names) if target is not None else None
        streaming = not session.shard.distributed  # else rank 0 writes the gathered records
        writer = RecordWriter(sys.stdout, fmt, RECORD_COLUMNS) \
            if fmt != "table" and not sweep and streaming else None
        files = AdversarialFiles(out, triptychs) if out is not None and not sweep else None
        judge = lambda images, full_size: classify_images(loaded, images, preprocess=full_size)  # noqa: E731
        carry = (lambda o: full_resolution(loaded.preprocessing, dataset.load(o.index), o.clean,
                                           o.adversarial)) if full_res else None
        to_class = label_mapper(dataset, loaded.class_names)
        rows, tally = [], AttackTally(eps)
        with session.prepared(needs_grad=True) as prepared:
            batches = session.batches(f"{method} {loaded.name}", normalize=False)
            results = (attack_batch(loaded, dataset, batch, attack, eps, chosen_target, to_class,
                                    prepared) for batch in batches)
            for outcomes in (o for per_batch in results for o in per_batch):
                extras = files.save_and_judge(outcomes, judge, carry) if files else [{}] * len(outcomes)
                for outcome, extra in zip(outcomes, extras):
                    tally.add(outcome, extra.get("success_after_save"))
                    record = {**outcome.to_record(), **extra}
                    if writer:
                        writer.write(record)
                    elif not sweep:
                        rows.append((outcome.index, record))
        parts = session.gather((tally, rows, files.counts() if files else None))
        finish(session)
        if not session.is_main:
            return
    tally = AttackTally(eps)
    for part in parts:  # every rank's counts (one process: its own)
        tally.merge(part[0])
    rows = [record for _, record in sorted((row for part in parts for row in part[1]),
                                           key=lambda row: row[0])]
    if not streaming and fmt != "table" and not sweep:
        RecordWriter(sys.stdout, fmt, RECORD_COLUMNS).write_all(rows)
    summaries = tally.summaries()
    if sweep:
        _report_sweep(method, norm, loaded.name, dataset.name, summaries, fmt, out)
        return
    if fmt == "table":
        _image_table(rows)
    console.info(summaries[0].describe(method, norm, chosen_target is not None,
                                       eps_label(summaries[0].eps)))
    if files:
        counts = [part[2] for part in parts]
        console.info(f"adversarial PNGs in {files.folder}" +
                     (f", triptychs in {files.triptych_folder}"
                      if any(c["triptychs"] for c in counts) else ""))
        if full_res:
            console.info(f"full resolution ({files.full_res_folder}): "
                         f"{sum(c['full_res_successes'] for c in counts)} of "
                         f"{sum(c['full_res'] for c in counts)} still succeed after the model's "
                         "resize and crop")


def _report_sweep(method, norm, model_name, data_name, summaries, fmt, out) -> None:
    from cnntool.io.figures import eps_label, save_accuracy_plot

    records = [{"model": model_name, "attack": method, "norm": norm, **s.to_record()} for s in summaries]
    title = f"{method} on {model_name}, {data_name} ({summaries[0].label_sources()})"
    columns = [Column("ε", lambda r: eps_label(r["eps"]), right=True),
               Column("accuracy", lambda r: percent(r["adv_accuracy"]), right=True),
               Column("success rate", lambda r: percent(r["success_rate"]), right=True)]
    if fmt == "table":
        write_records(records, "table", title=title, table_columns=columns)
    else:
        write_records(records, fmt, columns=SWEEP_COLUMNS)
        console.show_table(title, columns, records)
    if out is not None:
        plot = out / "sweep.png"
        save_accuracy_plot(plot, {model_name: ([s.eps for s in summaries],
                                               [s.adv_accuracy for s in summaries])},
                           title=f"{method} on {model_name}, {data_name}", xlabel=f"ε ({norm})")
        console.info(f"accuracy against ε plotted in {plot}")


def _image_table(rows: list[dict]) -> None:
    from cnntool.io.adversarial import class_label

    columns = [Column("path", lambda r: Path(r["path"]).name, fold=True),
               Column("label", "label", fold=True),
               Column("clean", lambda r: f"{class_label(r['clean_name'], r['clean_pred'])} {r['clean_conf']:.2f}", fold=True),
               Column("adversarial", lambda r: f"{class_label(r['adv_name'], r['adv_pred'])} {r['adv_conf']:.2f}", fold=True),
               Column("success", lambda r: "✓" if r["success"] else "✗"),
               Column("linf", lambda r: f"{r['linf']:.4f}")]
    write_records(rows, "table", table_columns=columns)
