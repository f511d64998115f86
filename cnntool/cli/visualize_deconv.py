"""`cnntool visualize deconv MODEL DATA`: a unit or class projected back to pixels, per image."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import (
    limit_option,
    model_and_data,
    position_option,
    records_format_option,
    shared_options,
)


@click.command(
    "deconv",
    epilog="""\b
Examples:
  cnntool visualize deconv efficientnet_lite0 photo.jpg --layer _blocks.10 --unit 5 --unit 9 \\
      -o deconv.png
  cnntool visualize deconv resnet18 cat.jpg --class 'tabby cat' --method saliency --smooth 16 \\
      -o sal.png --raw sal.npy
  cnntool visualize deconv efficientnet_lite0 photo.jpg --method ig --baseline blur \\
      --ig-steps 100 -o ig.png
  cnntool visualize deconv efficientnet_lite0 photos/ --method guided --batch-size 8 -o deconv/
  cnntool visualize deconv resnet18 cat.jpg --method lrp-alphabeta --lrp-first zbox -o lrp.png
""",
)
@model_and_data
@click.option(
    "--layer", help="Layer (module path or alias) whose unit to project; without it, a class."
)
@click.option(
    "--unit",
    "units",
    type=click.IntRange(0),
    multiple=True,
    help="Channel of --layer (repeat for several; default: each image's most active one).",
)
@click.option(
    "--position",
    callback=position_option,
    metavar="ROW,COL",
    help="Spatial position of the unit (default: its strongest in each image).",
)
@click.option(
    "--class",
    "target_class",
    metavar="INDEX|NAME",
    help="Project this class's pre-softmax logit (default without --layer: each image's predicted "
    "class).",
)
@click.option(
    "--method",
    type=click.Choice(
        ["guided", "deconv", "saliency", "ig", "lrp-zplus", "lrp-alphabeta", "lrp-epsilon"]
    ),
    default="guided",
    show_default=True,
    help="Springenberg guided backprop, Zeiler-Fergus deconvnet, Simonyan saliency (|gradient|), "
    "Sundararajan integrated gradients, or layer-wise relevance propagation named after the "
    "rule of its convolutions (z+, α-β or ε; ε on dense layers).",
)
@click.option("--times-input", is_flag=True, help="Multiply the map by the input (gradient×input).")
@click.option(
    "--smooth",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="SmoothGrad: average over this many noisy copies (0 = off).",
)
@click.option(
    "--noise",
    type=click.FloatRange(0),
    default=0.15,
    show_default=True,
    help="SmoothGrad noise, as a fraction of the input's range.",
)
@click.option(
    "--smooth-abs",
    type=click.Choice(["after-mean", "per-sample"]),
    default="after-mean",
    show_default=True,
    help="Saliency with --smooth: |mean gradient|, or the mean of every sample's "
    "|gradient| (captum's NoiseTunnel).",
)
@click.option(
    "--baseline",
    type=click.Choice(["black", "0", "mean", "blur", "noise"]),
    default="black",
    show_default=True,
    help="IG: integrate from black pixels, a zero model input (the normalization's "
    "mean colour; captum's default), the image's mean colour, the image blurred, "
    "or uniform noise.",
)
@click.option(
    "--ig-steps",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="IG: points of the path integral.",
)
@click.option(
    "--ig-rule",
    type=click.Choice(
        ["gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right"]
    ),
    default="gausslegendre",
    show_default=True,
    help="IG: quadrature (captum's names and default).",
)
@click.option(
    "--ig-batch-size",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="IG: path points per forward pass, for each image of a batch (--batch-size images).",
)
@click.option(
    "--lrp-first",
    type=click.Choice(["flat", "zbox", "epsilon", "zplus", "alphabeta"]),
    default="flat",
    show_default=True,
    help="LRP: the first layer's rule: flat, zbox (the pixel bounds of the model's "
    "normalization), or a layer rule.",
)
@click.option(
    "--epsilon",
    type=click.FloatRange(0),
    default=1e-6,
    show_default=True,
    help="LRP: the ε rule's ε (dense layers; every layer with lrp-epsilon).",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0),
    default=2.0,
    show_default=True,
    help="LRP α-β: the weight of positive contributions (α − β = 1).",
)
@click.option(
    "--beta",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="LRP α-β: the weight of negative contributions.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="SmoothGrad noise and IG noise-baseline seed.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(),
    metavar="DIR|FILE.png",
    help="A folder: one figure per image, NNNNN_NAME.png. FILE.png: the one figure of a single "
    "image. "
    "A figure has a row per unit: the projection in the unit's receptive field | the image patch "
    "there | the whole image with the field outlined (Zeiler & Fergus 2014, Fig. 2).",
)
@click.option(
    "--scale",
    "scale",
    type=click.Choice(["1", "2"]),
    default="1",
    show_default=True,
    callback=lambda ctx, param, value: int(value),
    help="2: the figure at twice the size (text, panels), for print and slides.",
)
@click.option(
    "--raw",
    type=click.Path(dir_okay=False),
    metavar="FILE.npy",
    help="With -o FILE.png: also save the raw maps (float32, units×C×H×W in model-input space).",
)
@limit_option
@shared_options(records_format_option)
def deconv_command(
    model,
    data,
    layer,
    units,
    position,
    target_class,
    method,
    times_input,
    smooth,
    noise,
    smooth_abs,
    baseline,
    ig_steps,
    ig_rule,
    ig_batch_size,
    lrp_first,
    epsilon,
    alpha,
    beta,
    seed,
    output,
    raw,
    scale,
    limit,
    fmt,
    model_request,
    scan,
):
    """Project a unit of a layer, or a class logit, back to the pixels of every image of DATA
    (an image, a folder, a list or a sample set): deconvnet (Zeiler & Fergus 2014), guided
    backprop (Springenberg et al. 2015), saliency (Simonyan et al. 2014), integrated gradients
    (Sundararajan et al. 2017) or layer-wise relevance propagation (Bach et al. 2015),
    --batch-size images per forward and backward. The rectifier rules cover every
    ReLU/ReLU6/LeakyReLU; smooth activations (SiLU, GELU) keep their gradient. One record per
    image and unit on stdout (image, target, value, map stats; for IG the completeness gap, for
    LRP the rules and the conservation). Unreadable images are skipped and counted."""
    from cnntool.tasks.integrated_gradients import IntegratedGradients
    from cnntool.tasks.lrp import LRP
    from cnntool.tasks.projection import SmoothGrad, Target, option_conflict

    if problem := option_conflict(method, times_input, smooth > 0, smooth_abs):
        raise click.UsageError(problem)
    one_file = output.lower().endswith(".png")
    if raw and not one_file:
        raise click.UsageError(
            "--raw FILE.npy goes with -o FILE.png (one image); a folder -o has no raw maps"
        )
    targets = Target.chosen(layer, units, position, target_class)
    _run(
        model,
        model_request,
        data,
        scan,
        limit,
        method,
        targets,
        output,
        raw,
        one_file,
        times_input=times_input,
        scale=scale,
        fmt=fmt,
        smooth=SmoothGrad(smooth, noise, seed, smooth_abs) if smooth else None,
        ig=IntegratedGradients(ig_steps, ig_rule, baseline, ig_batch_size, seed)
        if method == "ig"
        else None,
        lrp=LRP(lrp_first, epsilon, alpha, beta) if method.startswith("lrp-") else None,
    )


def _run(
    model,
    model_request,
    data,
    scan,
    limit,
    method,
    targets,
    output,
    raw,
    one_file,
    *,
    times_input,
    scale,
    fmt,
    smooth,
    ig,
    lrp=None,
):
    """The scan: figures as the batches come, records on stdout (rank 0's, in DATA's order)."""
    import sys
    from pathlib import Path

    from cnntool.cli.dataset_scan import OrderedRecords, dataset_scan, finish
    from cnntool.core.receptive_field import receptive_fields
    from cnntool.errors import CnnToolError
    from cnntool.io.cam import cam_file_stem
    from cnntool.io.overlays import (
        completeness_line,
        conservation_line,
        figure_title,
        projection_records,
        projections_figure,
        relevance_lines,
        save_raw_maps,
        uncovered_warning,
    )
    from cnntool.io.records import RecordWriter
    from cnntool.io.writers import save_image
    from cnntool.tasks.projection import projection_batches, receptive_boxes

    writer = RecordWriter(sys.stdout, fmt)
    outputs = {"files": {"-o": output, "--raw": raw}} if one_file else {"folders": {"-o": output}}
    with dataset_scan(model, model_request, data, scan, limit=limit, **outputs) as session:
        if one_file and len(session.dataset) > 1:
            raise CnnToolError(
                f"-o {Path(output).name} is the figure of one image, and DATA has "
                f"{len(session.dataset)}: give -o a folder for one figure per image"
            )
        loaded, fields = session.model, {}

        def boxes_of(
            projections,
        ):  # the receptive fields are traced once, when a unit has a position
            chosen = [p.target for p in projections]
            if "all" not in fields and any(t.position is not None for t in chosen):
                fields["all"] = receptive_fields(loaded.module, loaded.input_shape)
            return receptive_boxes(
                loaded.module, loaded.input_shape, chosen, fields=fields.get("all")
            )

        written, worrying, warned, records = 0, 0, False, OrderedRecords(session, writer)
        kept = []  # LRP: Σ relevance / f(x) of every map, for the closing line
        for indices, pixels, per_image in projection_batches(
            session, method, targets, times_input=times_input, smooth=smooth, ig=ig, lrp=lrp
        ):
            for index, image, projections in zip(indices, pixels, per_image, strict=True):
                if not warned and (warning := uncovered_warning(projections[0], method)):
                    console.warn(warning)
                if not warned:
                    for line, warn in relevance_lines(projections[0], method):
                        (console.warn if warn else console.info)(line)
                warned = True
                for projection in projections:
                    if (line := conservation_line(projection, method)) is not None:
                        kept.append(projection.relevance)
                        if one_file:
                            console.info(line)
                for line, worry in filter(None, map(completeness_line, projections)):
                    worrying += worry
                    if one_file:
                        (console.warn if worry else console.info)(line)
                path = session.dataset.paths[index]
                boxes = boxes_of(projections)
                figure = (
                    Path(output) if one_file else Path(output) / f"{cam_file_stem(index, path)}.png"
                )
                save_image(
                    projections_figure(
                        projections,
                        image.numpy(),
                        boxes,
                        method,
                        times_input,
                        scale=scale,
                        title=figure_title(loaded.name, projections, method, times_input),
                    ),
                    figure,
                )
                if raw:
                    save_raw_maps(raw, projections)
                written += 1
                for record in projection_records(projections, boxes, path):
                    records.add(index, record if one_file else {**record, "figure": str(figure)})
        finish(session)
        counts = records.gather((written, worrying))
        if counts is None:
            return
    written, worrying = counts
    if kept and not one_file:
        ratios = [r.total / r.f_input for r in kept if r.f_input != 0]
        if ratios:
            console.info(
                f"{method}: Σ relevance / target value from {min(ratios):.4g} to "
                f"{max(ratios):.4g} over {len(ratios)} map(s) (the records' lrp.sum, lrp.f_input)"
            )
    if worrying and not one_file:
        console.warn(
            f"ig: {worrying} map(s) miss completeness by over 5% of |F(x) − F(baseline)|; "
            "more --ig-steps narrow the gap (the records' ig.relative_gap)"
        )
    console.info(
        f"wrote {output}" + (f" and {raw}" if raw else "")
        if one_file
        else f"{written} {method} figure(s); wrote {output}/*.png"
    )
