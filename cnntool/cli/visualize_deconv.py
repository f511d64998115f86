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
@click.option("--method", type=click.Choice(["guided", "deconv", "saliency"]), default="guided", show_default=True,
              help="Springenberg guided backprop, Zeiler-Fergus deconvnet, or Simonyan saliency (|gradient|).")
@click.option("--times-input", is_flag=True, help="Multiply the map by the input (gradient×input).")
@click.option("--smooth", type=click.IntRange(0), default=0, show_default=True,
              help="SmoothGrad: average over this many noisy copies (0 = off).")
@click.option("--noise", type=click.FloatRange(0), default=0.15, show_default=True,
              help="SmoothGrad noise, as a fraction of the input's range.")
@click.option("--seed", type=int, default=0, show_default=True, help="SmoothGrad noise seed.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="PNG: projection | input under the receptive field | overlay, a row per unit.")
@click.option("--raw", type=click.Path(dir_okay=False), metavar="FILE.npy",
              help="Also save the raw maps (float32, units×C×H×W in model-input space).")
@shared_options(records_format_option, data=False)
def deconv_command(model, image, layer, units, position, target_class, method, times_input,
                   smooth, noise, seed, output, raw, fmt, model_request):
    """Project a unit of a layer, or a class logit, back to the pixels of IMAGE: deconvnet
    (Zeiler & Fergus 2014), guided backprop (Springenberg et al. 2015) or saliency (Simonyan
    et al. 2014). The rectifier rules cover every ReLU/ReLU6/LeakyReLU; smooth activations
    (SiLU, GELU) keep their gradient. One record per unit on stdout (target, value, map stats)."""
    from cnntool.cli.session import guard
    from cnntool.core.images import load_pixels
    from cnntool.io.outputs import InputFiles
    from cnntool.io.overlays import projection_records, projections_figure, save_raw_maps, uncovered_warning
    from cnntool.io.writers import save_image
    from cnntool.tasks.projection import SmoothGrad, Target, project_image, receptive_boxes

    targets = Target.chosen(layer, units, position, target_class)
    guard(InputFiles(files=[image]), files={"-o": output, "--raw": raw})
    loaded = model_request.load(model)
    pixels, _ = load_pixels(image, loaded.preprocessing)
    projections = project_image(loaded, pixels, method, targets, times_input=times_input,
                                smooth=SmoothGrad(smooth, noise, seed) if smooth else None)
    if warning := uncovered_warning(projections[0], method):
        console.warn(warning)
    boxes = receptive_boxes(loaded.module, loaded.input_shape, [p.target for p in projections])
    save_image(projections_figure(projections, pixels.numpy(), boxes, method, times_input), output)
    if raw:
        save_raw_maps(raw, projections)
    write_records(projection_records(projections, boxes, image), fmt)
    console.info(f"wrote {output}" + (f" and {raw}" if raw else ""))
