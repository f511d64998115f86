"""`cnntool visualize deconv MODEL IMAGE`: a unit or class projected back to pixels."""
from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import model_options, output_options, position_option, records_format_option
from cnntool.io.records import write_records


def _warn_uncovered(uncovered: dict, method: str) -> None:
    if uncovered and method != "saliency":
        kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(uncovered.items()))
        console.warn(f"{method}: the model also has smooth activations ({kinds}) that no "
                     "rectifier rule covers; they backprop their ordinary gradient")


@click.command("deconv", epilog="""Examples:

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
@click.option("--method", type=click.Choice(["guided", "deconv", "saliency"]), default="guided",
              show_default=True, help="Backward rule: Springenberg guided backprop, Zeiler-Fergus "
                                      "deconvnet, or Simonyan saliency (|gradient|).")
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
@records_format_option
@model_options
@output_options
def deconv_command(model, image, layer, units, position, target_class, method, times_input,
                   smooth, noise, seed, output, raw, fmt, model_request):
    """Project a unit of a layer, or a class logit, back to the pixels of IMAGE: deconvnet
    (Zeiler & Fergus 2014), guided backprop (Springenberg et al. 2015) or saliency (Simonyan
    et al. 2014), with gradient×input and SmoothGrad as options. The rectifier rules apply to
    every ReLU/ReLU6/LeakyReLU, module or functional; smooth activations (SiLU, GELU) keep their
    gradient, with a warning. One record per unit on stdout (target, value, map statistics)."""
    import numpy as np

    from cnntool.core.images import load_pixels
    from cnntool.errors import CnnToolError
    from cnntool.io.grids import stacked
    from cnntool.io.overlays import projection_row
    from cnntool.io.writers import open_output, save_image
    from cnntool.tasks.projection import SmoothGrad, Target, project

    if layer is None and (units or position):
        raise CnnToolError("--unit and --position need --layer")
    if layer is not None and target_class is not None:
        raise CnnToolError("give either --layer (a unit) or --class, not both")
    loaded = model_request.load(model)
    pixels, _ = load_pixels(image, loaded.preprocessing)
    x = loaded.preprocessing.normalize(pixels).unsqueeze(0).to(loaded.device)
    targets = [Target.unit_of(layer, u, position) for u in (units or (None,))] if layer \
        else [Target.logit(target_class)]
    projections = [project(loaded.module, x, method, target, class_names=loaded.class_names,
                           times_input=times_input,
                           smooth=SmoothGrad(smooth, noise, seed) if smooth else None)
                   for target in targets]
    _warn_uncovered(projections[0].uncovered, method)
    boxes = _boxes(loaded, [p.target for p in projections])
    shown = pixels.numpy()
    style = "saliency" if method == "saliency" and not times_input else method
    rows, records = [], []
    for projection, box in zip(projections, boxes):
        rows.append(projection_row(projection.map.cpu().numpy(), shown, box, style))
        record = {"image": image, **projection.to_record()}
        if box is not None:
            record["box"] = list(box)
        records.append(record)
    save_image(stacked(rows, gap=4, labels=[_label(p.target, method) for p in projections]), output)
    if raw:
        maps = np.stack([p.map.cpu().numpy().astype(np.float32) for p in projections])
        with open_output(raw, "wb") as handle:
            np.save(handle, maps if len(maps) > 1 else maps[0])
    write_records(records, fmt)
    console.info(f"wrote {output}" + (f" and {raw}" if raw else ""))


def _boxes(loaded, targets):
    """Each unit's receptive field in model-input pixels (None for a class, a fully connected
    layer, or a layer whose field spans the whole input)."""
    from cnntool.core.receptive_field import receptive_fields

    if all(t.position is None for t in targets):
        return [None] * len(targets)
    fields = receptive_fields(loaded.module, loaded.input_shape)
    boxes = []
    for target in targets:
        field = fields.get(target.layer) if target.position is not None else None
        boxes.append(None if field is None else field.input_box(*target.position))
    return boxes


def _label(target, method: str) -> str:
    """What a row shows: 'guided: _blocks.10 unit 5 at (3, 4)' or 'saliency: class 207 golden retriever'."""
    if target.kind == "class":
        return f"{method}: class {target.class_index}" + (f" {target.class_name}" if target.class_name else "")
    where = f" at ({target.position[0]}, {target.position[1]})" if target.position is not None else ""
    return f"{method}: {target.layer} unit {target.unit}{where}"
