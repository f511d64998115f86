"""`cnntool visualize check MODEL DATA`: which attribution map to trust on this model and data."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import limit_option, model_and_data, records_format_option, shared_options


def _list(parse):
    def callback(ctx, param, value):
        try:
            return tuple(parse(v.strip()) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"'{value}' is not a comma-separated list") from None

    return callback


@click.command(
    "check",
    epilog="""\b
Examples:
  cnntool visualize check efficientnet_lite0 imagenet-samples --limit 4 -o check/
  cnntool visualize check resnet18 photos/ --weights r18.pth --methods saliency,guided,gradcam \\
      -o check/
  cnntool visualize check efficientnet_lite0 photos/ --checks sanity --stages 10
""",
)
@model_and_data
@click.option(
    "--methods",
    default="saliency,gradxinput,guided,ig,gradcam",
    show_default=True,
    callback=_list(str),
    metavar="A,B,…",
    help="Attribution methods: saliency, gradxinput, guided, ig, gradcam, deconv, smoothgrad, "
    "gradcam++, layercam, hirescam, lrp-epsilon, lrp-zplus, lrp-alphabeta.",
)
@click.option(
    "--checks",
    default="deletion,road,sanity",
    show_default=True,
    callback=_list(str),
    metavar="A,B",
    help="deletion (deletion/insertion AUC, Petsiuk 2018), road (Rong 2022), sanity (cascading "
    "randomization, Adebayo 2018).",
)
@click.option(
    "--steps",
    default=20,
    show_default=True,
    type=click.IntRange(1),
    help="Deletion/insertion points: 1/steps of the pixels per step.",
)
@click.option(
    "--road-fractions",
    default="0.1,0.3,0.5,0.7,0.9",
    show_default=True,
    callback=_list(float),
    metavar="F,…",
    help="Fractions of the pixels that ROAD removes and imputes.",
)
@click.option(
    "--road-noise",
    default=0.01,
    show_default=True,
    type=click.FloatRange(0),
    help="σ of the noise added to ROAD's imputed pixels ([0, 1] pixel units).",
)
@click.option(
    "--stages",
    default=5,
    show_default=True,
    type=click.IntRange(0),
    help="Cascade stages: the parameterized modules, from the logits down, in this many groups "
    "(0: one module per stage).",
)
@click.option(
    "--max-correlation",
    default=0.5,
    show_default=True,
    type=click.FloatRange(-1, 1),
    help="Sanity rule: a method passes when its maps' rank correlation with the original, averaged "
    "over images and stages, is at most this.",
)
@click.option(
    "--layer", metavar="NAME", help="The CAM methods' layer (default: the last spatial one)."
)
@click.option(
    "--ig-steps",
    default=16,
    show_default=True,
    type=click.IntRange(1),
    help="Integrated gradients' steps (Gauss-Legendre, from a black image).",
)
@click.option(
    "--seed", default=0, show_default=True, help="Seed of the re-initialization and the noise."
)
@click.option(
    "-o",
    "--out",
    metavar="DIR",
    help="Folder for cascade.png (the first image's maps as the weights are randomized) and "
    "curves.png (deletion and insertion curves).",
)
@limit_option
@shared_options(records_format_option)
def check_command(
    model,
    data,
    methods,
    checks,
    steps,
    road_fractions,
    road_noise,
    stages,
    max_correlation,
    layer,
    ig_steps,
    seed,
    out,
    limit,
    fmt,
    model_request,
    scan,
):
    """Which attribution map to trust on MODEL and DATA. Every method is held to three tests:
    deletion and insertion (the target's probability as the map's top pixels are removed or put
    back; RISE), ROAD (removed pixels imputed from their neighbours, not a constant, so that
    the removal itself does not fool the model) and the sanity check of cascading
    randomization (the model's weights destroyed from the logits down, on a copy: a map that
    hardly changes does not explain the model). The target is each image's top class. A
    ranking table goes to stderr, one record per method to stdout. Slow: every image costs
    many forward passes per method; start with --limit 4."""
    import sys
    from dataclasses import replace
    from pathlib import Path

    from cnntool.cli.dataset_scan import dataset_scan, finish
    from cnntool.errors import CnnToolError
    from cnntool.io.check_report import (
        TABLE_COLUMNS,
        save_cascade_figure,
        save_curves_plot,
        table_rows,
    )
    from cnntool.io.records import RecordWriter
    from cnntool.tasks.check import RANKING, CheckSettings, check_batches, pass_rule, verdicts

    try:
        settings = CheckSettings(
            methods=methods,
            checks=checks,
            steps=steps,
            road_fractions=road_fractions,
            road_noise=road_noise,
            stages=stages,
            max_correlation=max_correlation,
            layer=layer,
            ig_steps=ig_steps,
            seed=seed,
            batch_size=scan.batch_size,
        )
    except CnnToolError as exc:
        raise click.UsageError(str(exc)) from None
    writer = RecordWriter(sys.stdout, fmt)
    with dataset_scan(
        model, model_request, data, scan, limit=limit, folders={"-o": out}
    ) as session:
        loaded = session.model
        parts, figure = [], None
        first = out is not None and session.is_main and "sanity" in settings.checks
        for pixels, part in check_batches(session, settings, figure=first):
            if part.maps:
                figure = (pixels[0].numpy(), part.maps)
            parts.append(replace(part, maps={}))  # the maps stay here
        finish(session)
        gathered = session.gather(parts)
        if not session.is_main:
            return
    results = verdicts([p for rank in gathered for p in rank], settings)
    for verdict in results:
        writer.write(verdict.to_record())
    console.show_table(
        f"Which attribution to trust on {loaded.name} ({results[0].images} images)",
        TABLE_COLUMNS,
        table_rows(results),
        caption=f"Rank: {RANKING}. Sanity {pass_rule(max_correlation)}.",
    )
    failed = [v.method for v in results if v.passed is False]
    if failed:
        console.warn(
            f"{', '.join(failed)}: the maps hardly change as the model's weights are randomized "
            "(Adebayo et al. 2018): they do not explain this model"
        )
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        written = []
        if figure is not None:
            save_cascade_figure(
                Path(out) / "cascade.png",
                figure[0],
                figure[1],
                results[0].cascade,
                title=f"Cascading randomization of {loaded.name}, from the logits down",
            )
            written.append("cascade.png")
        if "deletion" in settings.checks:
            save_curves_plot(
                Path(out) / "curves.png",
                results,
                title=f"Deletion and insertion on {loaded.name} ({results[0].images} images)",
            )
            written.append("curves.png")
        if written:
            console.info(f"wrote {', '.join(f'{out}/{name}' for name in written)}")
