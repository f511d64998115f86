"""`cnntool visualize activations MODEL IMAGE`: a layer's feature maps for one image."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import shared_options, stats_format_option
from cnntool.core.selection import parse_indices, parse_ranges
from cnntool.errors import CnnToolError
from cnntool.io.records import write_records


@click.command(
    "activations",
    epilog="""\b
Examples:
  cnntool visualize activations efficientnet_lite0 imagenet-samples --index 3 --layer _blocks.4 \\
      --top 16 -o maps.png
  cnntool visualize activations lenet5-mnist mnist-5k --layer conv1 --channels 0-7 --cmap gray \\
      -o digit.png
""",
)
@click.argument("model")
@click.argument("image")
@click.option("--layer", required=True, metavar="NAME", help="Layer path or alias.")
@click.option("-o", "--out", required=True, metavar="PNG", help="The image to write.")
@click.option(
    "--index",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Which image of a folder, list or set.",
)
@click.option("--channels", metavar="LIST", help="Channels to show, e.g. 0-15,42.")
@click.option(
    "--top", type=click.IntRange(1), help="Show the N channels with the largest mean activation."
)
@click.option(
    "--max-maps",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Without --channels/--top: show at most this many (the most active).",
)
@click.option(
    "--cmap",
    help="A matplotlib colormap, or gray (default: viridis; RdBu_r centred on 0 for a layer "
    "with negative values on one scale).",
)
@click.option(
    "--normalize",
    type=click.Choice(["layer", "map"]),
    default="layer",
    show_default=True,
    help="One colour scale for all maps shown (0 or −P … P, P a percentile of |activation| "
    "over them, on the colour bar), or each map by its own min/max.",
)
@click.option(
    "--percentile",
    type=click.FloatRange(50, 100),
    default=99.5,
    show_default=True,
    help="With --normalize layer: the percentile of |activation| at the scale's ends; values "
    "beyond are drawn in the end colours (arrows on the bar). 100: the largest |activation|.",
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
def activations_command(
    model,
    image,
    layer,
    out,
    index,
    channels,
    top,
    max_maps,
    cmap,
    normalize,
    percentile,
    scale,
    fmt,
    model_request,
):
    """Feature maps of LAYER for one image (Zeiler & Fergus 2014), beside the model's input,
    each labelled with its channel and mean, with a colour bar (one scale for all maps, to the
    99.5th percentile of |activation|, unless --normalize map). IMAGE is a file, or a
    folder/list/sample set."""
    from cnntool.cli.dataset_scan import guard
    from cnntool.core.data import open_data
    from cnntool.io.layer_grids import activation_records, activations_picture
    from cnntool.io.outputs import InputFiles
    from cnntool.io.writers import save_image
    from cnntool.tasks.activations import feature_maps

    if channels and top:
        raise CnnToolError("give --channels or --top, not both")
    parse_ranges(channels)  # a malformed list fails before the model loads
    dataset = open_data(image)
    guard(InputFiles.of_data(image, dataset), files={"-o": out})
    loaded = model_request.load(model)
    pixels, _ = dataset.load_pixels(index, loaded.preprocessing)
    inputs = loaded.preprocessing.normalize(pixels).to(loaded.device)
    wanted = parse_indices(channels)
    result = feature_maps(loaded.module, inputs, layer, channels=wanted, top=top, at_most=max_maps)
    if wanted is None and top is None and result.total_channels > max_maps:
        console.info(
            f"showing the {max_maps} most active of {result.total_channels} channels (--top, "
            "--channels)"
        )
    save_image(
        activations_picture(
            result,
            pixels,
            loaded.name,
            cmap=cmap,
            normalize=normalize,
            percentile=percentile,
            scale=scale,
        ),
        out,
    )
    console.info(
        f"{len(result.channels)} of {result.total_channels} maps of {result.layer} for "
        f"{dataset.paths[index]}; wrote {out}"
    )
    write_records(activation_records(result), fmt)
