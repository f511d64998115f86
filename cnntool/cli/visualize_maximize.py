"""`cnntool visualize maximize MODEL`: the input that maximizes a unit or class."""
from __future__ import annotations

from pathlib import Path

import click

from cnntool.cli import console
from cnntool.cli.options import (load_cli_model, model_options, output_options, position_option,
                                  records_format_option, write_records)


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
@click.option("--position", callback=position_option, metavar="ROW,COL", help="Position for --neuron.")
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
@records_format_option
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
    write_records(records, fmt)
    console.info(f"wrote {output} and {len(results)} unit image(s) beside it")


def _num_classes(loaded) -> int:
    import torch

    with torch.no_grad():
        logits = loaded.module(torch.zeros(1, *loaded.input_shape, device=loaded.device))
    return (logits[0] if isinstance(logits, (tuple, list)) else logits).shape[1]
