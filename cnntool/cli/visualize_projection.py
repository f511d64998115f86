"""`cnntool visualize deconv` and `cnntool visualize maximize`: thin commands over
cnntool.tasks.projection / cnntool.tasks.maximize (torch is imported inside the commands, so
`--help` stays fast)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from cnntool.cli import console
from cnntool.cli.options import load_cli_model, model_options, output_options

_FORMAT = click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
                       show_default=True, help="stdout format of the per-unit records.")


def _position(ctx, param, value):
    if value is None:
        return None
    parts = value.replace("x", ",").split(",")
    try:
        row, col = (int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a position like 3,5 (row,column)") from None
    return row, col


def _write_records(records, fmt: str) -> None:
    from cnntool.io.writers import RecordWriter

    writer = RecordWriter(sys.stdout, fmt)
    for record in records:
        writer.write(record)


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
@click.option("--position", callback=_position, metavar="ROW,COL",
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
@_FORMAT
@model_options
@output_options
def deconv_command(model, image, layer, units, position, target_class, method, times_input,
                   smooth, noise, seed, output, raw, fmt, arch, weights, trust_code, device):
    """Project a unit of a layer, or a class logit, back to the pixels of IMAGE: deconvnet
    (Zeiler & Fergus 2014), guided backprop (Springenberg et al. 2015) or saliency (Simonyan
    et al. 2014), with gradient×input and SmoothGrad as options. The rectifier rules apply to
    every ReLU/ReLU6/LeakyReLU, module or functional; smooth activations (SiLU, GELU) keep their
    gradient, with a warning. One record per unit on stdout (target, value, map statistics)."""
    import numpy as np

    from cnntool.core.images import load_image
    from cnntool.errors import CnnToolError
    from cnntool.io import overlays
    from cnntool.io.figures import pixels_to_image
    from cnntool.io.grids import stacked
    from cnntool.io.writers import open_output, save_image
    from cnntool.tasks.projection import project

    if layer is None and (units or position):
        raise CnnToolError("--unit and --position need --layer")
    if layer is not None and target_class is not None:
        raise CnnToolError("give either --layer (a unit) or --class, not both")
    loaded = load_cli_model(model, arch=arch, weights=weights, device=device, trust_code=trust_code)
    pixels = loaded.preprocessing.to_pixels(load_image(image))
    x = loaded.preprocessing.normalize(pixels).unsqueeze(0).to(loaded.device)
    projections = [project(loaded.module, x, method, layer=layer, unit=u, position=position,
                           target_class=target_class, class_names=loaded.class_names,
                           times_input=times_input, smooth_samples=smooth,
                           smooth_noise=noise, seed=seed)
                   for u in (units or (None,))]
    _warn_uncovered(projections[0].uncovered, method)
    boxes = _boxes(loaded, [p.target for p in projections])
    shown = pixels.numpy()
    rows, records = [], []
    for projection, box in zip(projections, boxes):
        raw_map = projection.map.cpu().numpy()
        picture = overlays.projection_image(raw_map, "saliency" if method == "saliency"
                                            and not times_input else method)
        if box is not None:  # Zeiler-Fergus show the projection beside the patch it came from
            drawn = np.asarray(picture, dtype=np.float32) / 255.0
            drawn = drawn[None] if drawn.ndim == 2 else drawn.transpose(2, 0, 1)
            tiles = [pixels_to_image(overlays.crop_box(drawn, box, fill=0.5)),
                     pixels_to_image(overlays.crop_box(shown, box))]
        else:
            tiles = [picture]
        tiles.append(overlays.outline(overlays.overlay(shown, overlays.heat(raw_map)), box))
        rows.append(overlays.panel(tiles, height=max(shown.shape[1], 96)))
        record = {"image": image, **projection.to_record()}
        if box is not None:
            record["box"] = list(box)
        records.append(record)
    save_image(stacked(rows, gap=4), output)
    if raw:
        maps = np.stack([p.map.cpu().numpy().astype(np.float32) for p in projections])
        with open_output(raw, "wb") as handle:
            np.save(handle, maps if len(maps) > 1 else maps[0])
    _write_records(records, fmt)
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


@click.command("maximize", epilog="""Examples:

  cnntool visualize maximize efficientnet_lite0 --layer _blocks.10 --unit 3 --unit 7 -o max.png

  cnntool visualize maximize lenet5-mnist --class 3 --class 8 -o digits.png --steps 64

  cnntool visualize maximize efficientnet_lite0 --class goldfish --param pixel --blur-every 4 -o fish.png
""")
@click.argument("model")
@click.option("--layer", help="Layer (module path or alias) of the units; without it, classes.")
@click.option("--unit", "units", type=click.IntRange(0), multiple=True,
              help="Channel of --layer to maximize (repeat: one image per unit, one batch).")
@click.option("--class", "classes", multiple=True, metavar="INDEX|NAME",
              help="Class logit to maximize (repeat for several).")
@click.option("--neuron", is_flag=True,
              help="Maximize the unit at one position (--position, default the centre) "
                   "instead of the channel's mean over positions.")
@click.option("--position", callback=_position, metavar="ROW,COL", help="Position for --neuron.")
@click.option("--start", type=click.Path(dir_okay=False), metavar="IMAGE",
              help="Start from this image instead of seeded noise.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--param", type=click.Choice(["fourier", "pixel"]),
              help="Parameterization (default: fourier for colour ≥ 65 px, pixel for small inputs).")
@click.option("--steps", type=click.IntRange(1), help="Adam steps (default 256 / 128 small).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Adam learning rate (default 0.05 / 0.1).")
@click.option("--jitter", type=click.IntRange(0), help="Max random shift, px (default 8 / 1).")
@click.option("--pad", type=click.IntRange(0), help="Mirrored border a pure shift may show, px (default 12 / 2; 0 wraps around). A zoom or rotation mirrors as far as it needs.")
@click.option("--scale", "scale", type=click.FloatRange(0, 0.9),
              help="Random zoom ± this fraction (default 0.1 / 0).")
@click.option("--rotate", type=click.FloatRange(0, 180), help="Max random rotation, degrees (default 5 / 0).")
@click.option("--l2", type=click.FloatRange(0), help="L2 decay weight (default 0 / 1e-3).")
@click.option("--tv", type=click.FloatRange(0), help="Total variation weight (default 0 / 1e-3).")
@click.option("--blur-every", type=click.IntRange(0), help="Blur every N steps, pixel param (default 0 / 4).")
@click.option("--blur-sigma", type=click.FloatRange(0, min_open=True), help="Blur sigma, px (default 0.5).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="PNG of the grid; each unit also gets OUTPUT-STEM_unitN.png beside it.")
@_FORMAT
@model_options
@output_options
def maximize_command(model, layer, units, classes, neuron, position, start, seed, param, steps,
                     lr, jitter, pad, scale, rotate, l2, tv, blur_every, blur_sigma, output,
                     fmt, arch, weights, trust_code, device):
    """Synthesize the input that maximizes a channel of --layer (mean over positions; --neuron
    for one position) or a class logit (--class), one image per unit, optimized as one batch.
    Defaults suit 224-px colour models (Fourier parameters with decorrelated colour, jitter,
    scale, rotation) and, for inputs ≤ 64 px such as LeNet-5's 28 px, pixels with L2 decay,
    total variation and blur. Writes a grid PNG, a PNG per unit, and one record per unit
    (objective value) on stdout."""
    from cnntool.core.images import load_image
    from cnntool.errors import CnnToolError
    from cnntool.io.figures import pixels_to_image
    from cnntool.io.grids import grid
    from cnntool.io.writers import save_image
    from cnntool.tasks.maximize import MaximizeConfig, maximize, objective, with_overrides
    from cnntool.core.classes import class_index

    if bool(layer) == bool(classes):
        raise CnnToolError("give --layer with --unit, or --class, to say what to maximize")
    if layer and not units:
        raise CnnToolError("--layer needs at least one --unit")
    loaded = load_cli_model(model, arch=arch, weights=weights, device=device, trust_code=trust_code)
    if classes:
        num = len(loaded.class_names) if loaded.class_names else _num_classes(loaded)
        goal = objective(loaded.module, "class",
                         [class_index(c, loaded.class_names, num) for c in classes])
    else:
        goal = objective(loaded.module, "neuron" if neuron else "channel", units, layer, position)
    config = with_overrides(
        MaximizeConfig.for_input(loaded.input_shape), param=param, steps=steps, lr=lr,
        jitter=jitter, pad=pad, rotate=rotate, l2=l2, tv=tv, blur_every=blur_every,
        blur_sigma=blur_sigma, scales=None if scale is None else (1 - scale, 1 + scale))
    first = None
    if start:
        first = loaded.preprocessing.to_pixels(load_image(start))
    with console.progress(f"maximize {loaded.name}", total=config.steps) as advance:
        results = maximize(loaded.module, loaded.preprocessing, goal, config, start=first,
                           seed=seed, progress=advance)
    out = Path(output)
    tiles = [pixels_to_image(r.pixels.numpy()) for r in results]
    for result, tile in zip(results, tiles):
        save_image(tile, out.with_name(f"{out.stem}_unit{result.unit}{out.suffix or '.png'}"))
    save_image(grid(tiles), out)
    records = []
    for result in results:
        record = result.to_record(goal)
        if goal.kind == "class":
            record["name"] = loaded.class_name(result.unit)
        record["steps"] = config.steps
        record["param"] = config.param
        records.append(record)
    _write_records(records, fmt)
    console.info(f"wrote {output} and {len(results)} unit image(s) beside it")


def _num_classes(loaded) -> int:
    import torch

    with torch.no_grad():
        logits = loaded.module(torch.zeros(1, *loaded.input_shape, device=loaded.device))
    return (logits[0] if isinstance(logits, (tuple, list)) else logits).shape[1]
