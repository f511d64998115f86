"""`cnntool attack fgsm|bim|pgd MODEL DATA`: adversarial examples in [0, 1] pixel space."""
from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import click

from cnntool.cli import console
from cnntool.cli.options import (data_options, format_option, load_cli_model,
                                  model_options, output_options)

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


def _run(method, attack, model, data, *, norm, eps, target, out, triptychs, full_res, fmt, arch,
         weights, trust_code, device, batch_size, workers, seed=None) -> None:
    from cnntool.core.data import BatchStream, open_data
    from cnntool.errors import DataError
    from cnntool.io.writers import RecordWriter
    from cnntool.tasks.attack import AttackTally, attack_dataset, check_eps, resolve_target

    for value in eps:  # before the (slow) model loading
        check_eps(value, norm)
    loaded = load_cli_model(model, arch=arch, weights=weights, device=device, trust_code=trust_code)
    if seed is not None:  # the random start is drawn on the model's device
        import functools

        import torch

        attack = functools.partial(attack, generator=torch.Generator(loaded.device).manual_seed(seed))
    chosen_target = resolve_target(target, loaded.class_names) if target is not None else None
    dataset = open_data(data)
    stream = BatchStream(dataset, loaded.preprocessing, batch_size=batch_size, workers=workers,
                         normalize=False)
    sweep = len(eps) > 1
    writer = RecordWriter(sys.stdout, fmt, RECORD_COLUMNS) if fmt != "table" and not sweep else None
    rows, tally = [], AttackTally(eps)
    if full_res and (out is None or sweep):
        console.warn("--full-res needs -o DIR and a single ε; no full-resolution images written")
    saver = _Saver(out, loaded, triptychs, dataset if full_res else None) \
        if out is not None and not sweep else None
    with console.progress(f"{method} {loaded.name}", total=len(dataset) * len(eps)) as advance:
        for outcomes in attack_dataset(loaded, stream, attack, eps, chosen_target):
            extras = saver.save(outcomes) if saver else [{}] * len(outcomes)
            for outcome, extra in zip(outcomes, extras):
                tally.add(outcome, extra.get("success_after_save"))
                record = {**outcome.to_record(), **extra}
                if writer:
                    writer.write(record)
                elif not sweep:
                    rows.append(record)
            advance(len(outcomes))
        advance(len(stream.skipped) * len(eps))
    if len(stream.skipped) == len(dataset):
        raise DataError(f"none of the {len(dataset)} images in {data} could be read")
    summaries = tally.summaries()
    if sweep:
        _report_sweep(method, norm, loaded.name, dataset.name, summaries, fmt, out)
    else:
        if fmt == "table":
            _image_table(rows)
        console.info(_summary_line(method, norm, summaries[0], chosen_target is not None))
        if saver:
            console.info(f"adversarial PNGs in {saver.folder}" +
                         (f", triptychs in {saver.triptych_folder}" if saver.triptych_count else ""))
        if saver and saver.dataset is not None:
            console.info(f"full resolution ({saver.full_res_folder}): {saver.full_res_successes} of "
                         f"{saver.full_res_count} still succeed after the model's resize and crop")
    if stream.skipped:
        console.warn(f"skipped {len(stream.skipped)} unreadable image(s), e.g. {stream.skipped[0][1]}")


class _Saver:
    """Writes each adversarial image as an 8-bit PNG, reads the file back and re-classifies it
    (does the attack survive quantization?), and draws triptychs for the first images."""

    def __init__(self, out: Path, loaded, triptychs: int, dataset=None):
        self.loaded, self.triptychs_left, self.triptych_count = loaded, triptychs, 0
        self.folder, self.triptych_folder = out / "adversarial", out / "triptych"
        # with --full-res: the originals come from the dataset again
        self.dataset, self.full_res_folder = dataset, out / "full_res"
        self.full_res_count = self.full_res_successes = 0

    def save(self, outcomes) -> list[dict]:
        from cnntool.core.images import load_image
        from cnntool.io.figures import pixels_to_image
        from cnntool.io.writers import save_image
        from cnntool.tasks.attack import reclassify_saved, succeeded

        files = []
        for outcome in outcomes:
            file = self.folder / f"{outcome.index:05d}_{Path(outcome.path).stem}.png"
            save_image(pixels_to_image(outcome.adversarial.cpu().numpy()), file)
            files.append(file)
            if self.triptychs_left:
                self._triptych(outcome)
        predictions = reclassify_saved(self.loaded, [load_image(file) for file in files])
        records = [{"file": str(file), "success_after_save": succeeded(pred, o.label, o.target)}
                   for file, pred, o in zip(files, predictions, outcomes)]
        if self.dataset is not None:
            for record, extra in zip(records, self._full_res(outcomes)):
                record.update(extra)
        return records

    def _full_res(self, outcomes) -> list[dict]:
        """Save each perturbation carried onto the original photo; re-classify the files."""
        from cnntool.core.images import load_image
        from cnntool.io.writers import save_image
        from cnntool.tasks.attack import succeeded
        from cnntool.tasks.attack.full_res import classify_images, full_resolution

        files = []
        for outcome in outcomes:
            original = self.dataset.load(outcome.index)
            file = self.full_res_folder / f"{outcome.index:05d}_{Path(outcome.path).stem}.png"
            save_image(full_resolution(self.loaded.preprocessing, original, outcome.clean,
                                       outcome.adversarial), file)
            files.append(file)
        predictions = classify_images(self.loaded, [load_image(file) for file in files])
        results = [succeeded(pred, o.label, o.target) for pred, o in zip(predictions, outcomes)]
        self.full_res_count += len(results)
        self.full_res_successes += sum(results)
        return [{"full_res_file": str(file), "full_res_pred": pred, "success_full_res": ok}
                for file, pred, ok in zip(files, predictions, results)]

    def _triptych(self, outcome) -> None:
        from cnntool.io.figures import eps_label, save_triptych

        save_triptych(self.triptych_folder / f"{outcome.index:05d}_{Path(outcome.path).stem}.png",
                      outcome.clean.cpu().numpy(), outcome.adversarial.cpu().numpy(),
                      clean_title=f"original: {_class(outcome.clean_name, outcome.clean_pred)}  {outcome.clean_conf:.1%}",
                      perturbation_title=f"perturbation, ε = {eps_label(outcome.eps)} (amplified)",
                      adversarial_title=f"adversarial: {_class(outcome.adv_name, outcome.adv_pred)}  {outcome.adv_conf:.1%}")
        self.triptychs_left -= 1
        self.triptych_count += 1


def _class(name: str | None, index: int) -> str:
    return name if name is not None else f"class {index}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _summary_line(method: str, norm: str, summary, targeted: bool) -> str:
    from cnntool.io.figures import eps_label

    goal = "classified as the target" if targeted else "misclassified"
    line = (f"{method} ε = {eps_label(summary.eps)} ({norm}) on {summary.images} images "
            f"({_label_sources(summary)}): accuracy {_percent(summary.clean_accuracy)} → "
            f"{_percent(summary.adv_accuracy)}; success rate {_percent(summary.success_rate)} "
            f"({summary.successes}/{summary.images} {goal})")
    if summary.saved:
        line += (f"; after saving as 8-bit PNG {summary.successes_after_save}/{summary.saved} "
                 "still succeed")
    return line


def _label_sources(summary) -> str:
    from_predictions = summary.images - summary.labels_from_dataset
    if not from_predictions:
        return "labels from the dataset"
    note = "the model's clean predictions, so clean accuracy counts them as right"
    if not summary.labels_from_dataset:
        return f"labels: {note}"
    return f"labels: {summary.labels_from_dataset} from the dataset, {from_predictions} from {note}"


def _report_sweep(method, norm, model_name, data_name, summaries, fmt, out) -> None:
    from rich.table import Table

    from cnntool.io.figures import eps_label, save_accuracy_plot
    from cnntool.io.writers import RecordWriter

    records = [{"model": model_name, "attack": method, "norm": norm, **s.to_record()} for s in summaries]
    table = Table(title=f"{method} on {model_name}, {data_name} ({_label_sources(summaries[0])})",
                  title_justify="left")
    for column in ("ε", "accuracy", "success rate"):
        table.add_column(column, justify="right")
    for s in summaries:
        table.add_row(eps_label(s.eps), _percent(s.adv_accuracy), _percent(s.success_rate))
    if fmt == "table":
        console.stdout_console().print(table)
    else:
        RecordWriter(sys.stdout, fmt, SWEEP_COLUMNS).write_all(records)
        console.show(table)
    if out is not None:
        plot = out / "sweep.png"
        save_accuracy_plot(plot, {model_name: ([s.eps for s in summaries],
                                               [s.adv_accuracy for s in summaries])},
                           title=f"{method} on {model_name}, {data_name}", xlabel=f"ε ({norm})")
        console.info(f"accuracy against ε plotted in {plot}")


def _image_table(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title_justify="left")
    for column in ("path", "label", "clean", "adversarial", "success", "linf"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(Path(r["path"]).name, str(r["label"]),
                      f"{_class(r['clean_name'], r['clean_pred'])} {r['clean_conf']:.2f}",
                      f"{_class(r['adv_name'], r['adv_pred'])} {r['adv_conf']:.2f}",
                      "✓" if r["success"] else "✗", f"{r['linf']:.4f}")
    console.stdout_console().print(table)
