"""`cnntool visualize filters MODEL`: learned filters as a grid (Krizhevsky 2012, Fig. 3)."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import shared_options, stats_format_option
from cnntool.io.records import write_records


@click.command(
    "filters",
    epilog="""\b
Examples:
  cnntool visualize filters efficientnet_lite0 --fold-bn -o stem.png
  cnntool visualize filters alexnet --layer conv2 --tiles outputs --format jsonl -o conv2.png
""",
)
@click.argument("model")
@click.option("--layer", metavar="NAME", help="A convolution (default: the first one).")
@click.option("-o", "--out", required=True, metavar="PNG", help="The grid image to write.")
@click.option("--fold-bn", is_flag=True, help="Fold the following BatchNorm into the filters.")
@click.option(
    "--normalize",
    type=click.Choice(["filter", "global"]),
    default="filter",
    show_default=True,
    help="Scale each filter by its own largest |weight|, or all by the layer's.",
)
@click.option(
    "--tiles",
    type=click.Choice(["pairs", "outputs"]),
    default="pairs",
    show_default=True,
    help="Layers without 3 input channels: a gray tile per (output, input) pair, "
    "or one per output (the mean over its inputs).",
)
@click.option(
    "--max-filters",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Show the first N filters.",
)
@click.option(
    "--max-inputs",
    default=16,
    show_default=True,
    type=click.IntRange(1),
    help="With --tiles pairs: the first N input channels.",
)
@click.option(
    "--tile-size",
    type=click.IntRange(4),
    help="Pixels per tile at 1× (default: a whole number per kernel pixel, at least 8 and 48 a "
    "tile).",
)
@click.option(
    "--scale",
    "scale",
    type=click.Choice(["1", "2"]),
    default="1",
    show_default=True,
    callback=lambda ctx, param, value: int(value),
    help="2: the figure at twice the size (text, tiles, gaps), for print and slides.",
)
@shared_options(stats_format_option, data=False)
def filters_command(model, layer, out, fold_bn, fmt, model_request, **shown):
    """Draw the learned filters of a convolution as a grid (Krizhevsky et al. 2012, Fig. 3):
    RGB tiles for 3 input channels (0 at mid-grey), else a blue-white-red colour map with its
    colour bar (0 white), each kernel pixel a sharp square. With --format, per-filter L2 norm,
    mean, std and largest |correlation| with another filter (near 1 = redundant) go to stdout."""
    from cnntool.io.layer_grids import filter_records, filters_grid
    from cnntool.io.writers import save_image
    from cnntool.tasks.filters import filters, in_image_order

    loaded = model_request.load(model)
    result = in_image_order(filters(loaded.module, layer, fold_bn=fold_bn), loaded)
    save_image(filters_grid(result, loaded.name, **shown), out)
    kh, kw = result.weights.shape[2:]
    console.info(
        f"{len(result.stats)} filters of {result.layer} ({kh}x{kw}, {result.weights.shape[1]} "
        f"inputs); mean |correlation| between filters {result.mean_abs_corr:.3f}; wrote {out}"
    )
    write_records(filter_records(result), fmt)
