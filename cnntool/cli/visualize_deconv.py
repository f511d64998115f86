"""`cnntool visualize deconv MODEL IMAGE`: a unit or class projected back to pixels."""
from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import position_option, records_format_option, shared_options
from cnntool.io.records import write_records


@click.command("deconv", epilog="""\b
Examples:
  cnntool visualize deconv efficientnet_lite0 photo.jpg --layer _blocks.10 --unit 5 --unit 9 -o deconv.png
  cnntool visualize deconv resnet18 cat.jpg --class 'tabby cat' --method saliency --smooth 16 -o sal.png --raw sal.npy
  cnntool visualize deconv efficientnet_lite0 photo.jpg --method ig --baseline blur --ig-steps 100 -o ig.png
""")
@click.argument("model")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--layer", help="Layer (module path or alias) whose unit to project; without it, a class.")
@click.option("--unit", "units", type=click.IntRange(0), multiple=True,
              help="Channel of --layer (repeat for several; default: the most active one).")
@click.option("--position", callback=position_option, metavar="ROW,COL",
              help="Spatial position of the unit (default: its strongest).")
@click.option("--class", "target_class", metavar="INDEX|NAME",
              help="Project this class's pre-softmax logit (default without --layer: the predicted class).")
@click.option("--method", type=click.Choice(["guided", "deconv", "saliency", "ig"]), default="guided", show_default=True,
              help="Springenberg guided backprop, Zeiler-Fergus deconvnet, Simonyan saliency (|gradient|), or "
                   "Sundararajan integrated gradients.")
@click.option("--times-input", is_flag=True, help="Multiply the map by the input (gradient×input).")
@click.option("--smooth", type=click.IntRange(0), default=0, show_default=True,
              help="SmoothGrad: average over this many noisy copies (0 = off).")
@click.option("--noise", type=click.FloatRange(0), default=0.15, show_default=True,
              help="SmoothGrad noise, as a fraction of the input's range.")
@click.option("--smooth-abs", type=click.Choice(["after-mean", "per-sample"]), default="after-mean",
              show_default=True, help="Saliency with --smooth: |mean gradient|, or the mean of every sample's "
                                      "|gradient| (captum's NoiseTunnel).")
@click.option("--baseline", type=click.Choice(["black", "0", "mean", "blur", "noise"]), default="black",
              show_default=True, help="IG: integrate from black pixels, a zero model input (the normalization's "
                                      "mean colour; captum's default), the image's mean colour, the image blurred, "
                                      "or uniform noise.")
@click.option("--ig-steps", type=click.IntRange(1), default=50, show_default=True,
              help="IG: points of the path integral.")
@click.option("--ig-rule", type=click.Choice(["gausslegendre", "riemann_trapezoid", "riemann_middle",
                                              "riemann_left", "riemann_right"]),
              default="gausslegendre", show_default=True, help="IG: quadrature (captum's names and default).")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True,
              help="IG: path points per forward pass.")
@click.option("--seed", type=int, default=0, show_default=True, help="SmoothGrad noise and IG noise-baseline seed.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="PNG: a row per unit: the projection in the unit's receptive field | the image patch "
                   "there | the whole image with the field outlined (Zeiler & Fergus 2014, Fig. 2).")
@click.option("--scale", "scale", type=click.Choice(["1", "2"]), default="1", show_default=True,
              callback=lambda ctx, param, value: int(value),
              help="2: the figure at twice the size (text, panels), for print and slides.")
@click.option("--raw", type=click.Path(dir_okay=False), metavar="FILE.npy",
              help="Also save the raw maps (float32, units×C×H×W in model-input space).")
@shared_options(records_format_option, data=False)
def deconv_command(model, image, layer, units, position, target_class, method, times_input,
                   smooth, noise, smooth_abs, baseline, ig_steps, ig_rule, batch_size, seed, output,
                   raw, scale, fmt, model_request):
    """Project a unit of a layer, or a class logit, back to the pixels of IMAGE: deconvnet
    (Zeiler & Fergus 2014), guided backprop (Springenberg et al. 2015), saliency (Simonyan
    et al. 2014) or integrated gradients (Sundararajan et al. 2017). The rectifier rules cover
    every ReLU/ReLU6/LeakyReLU; smooth activations (SiLU, GELU) keep their gradient. One record
    per unit on stdout (target, value, map stats; for IG the completeness gap)."""
    from cnntool.cli.session import guard
    from cnntool.core.images import load_pixels
    from cnntool.io.outputs import InputFiles
    from cnntool.io.overlays import (completeness_line, figure_title, projection_records,
                                     projections_figure, save_raw_maps, uncovered_warning)
    from cnntool.io.writers import save_image
    from cnntool.tasks.integrated_gradients import IntegratedGradients
    from cnntool.tasks.projection import SmoothGrad, Target, option_conflict, project_image, receptive_boxes

    if problem := option_conflict(method, times_input, smooth > 0, smooth_abs):
        raise click.UsageError(problem)
    targets = Target.chosen(layer, units, position, target_class)
    guard(InputFiles(files=[image]), files={"-o": output, "--raw": raw})
    loaded = model_request.load(model)
    pixels, _ = load_pixels(image, loaded.preprocessing)
    projections = project_image(loaded, pixels, method, targets, times_input=times_input,
                                smooth=SmoothGrad(smooth, noise, seed, smooth_abs) if smooth else None,
                                ig=IntegratedGradients(ig_steps, ig_rule, baseline, batch_size, seed)
                                if method == "ig" else None)
    if warning := uncovered_warning(projections[0], method):
        console.warn(warning)
    for line, worrying in filter(None, map(completeness_line, projections)):
        (console.warn if worrying else console.info)(line)
    boxes = receptive_boxes(loaded.module, loaded.input_shape, [p.target for p in projections])
    save_image(projections_figure(projections, pixels.numpy(), boxes, method, times_input, scale=scale,
                                  title=figure_title(loaded.name, projections, method, times_input)), output)
    if raw:
        save_raw_maps(raw, projections)
    write_records(projection_records(projections, boxes, image), fmt)
    console.info(f"wrote {output}" + (f" and {raw}" if raw else ""))
