"""`cnntool visualize activations MODEL IMAGE`: a layer's feature maps for one image."""
from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import model_options, output_options, stats_format_option
from cnntool.io.records import write_records
from cnntool.core.selection import parse_indices, parse_ranges
from cnntool.errors import CnnToolError


@click.command("activations", epilog="""Examples:

  cnntool visualize activations efficientnet_lite0 imagenet-samples --index 3 --layer _blocks.4 --top 16 -o maps.png

  cnntool visualize activations lenet5-mnist mnist-5k --layer conv1 --channels 0-7 --cmap gray -o digit.png
""")
@click.argument("model")
@click.argument("image")
@click.option("--layer", required=True, metavar="NAME", help="Layer path or alias.")
@click.option("-o", "--out", required=True, metavar="PNG", help="The image to write.")
@click.option("--index", default=0, show_default=True, type=click.IntRange(0),
              help="When IMAGE is a folder, list or sample set: which of its images.")
@click.option("--channels", metavar="LIST", help="Channels to show, e.g. 0-15,42.")
@click.option("--top", type=click.IntRange(1), help="Show the N channels with the largest mean activation.")
@click.option("--max-maps", default=64, show_default=True, type=click.IntRange(1),
              help="Without --channels/--top: show at most this many (the most active).")
@click.option("--cmap", default="viridis", show_default=True, help="A matplotlib colormap, or gray.")
@click.option("--normalize", type=click.Choice(["map", "layer"]), default="map", show_default=True,
              help="Scale each map by its own min/max, or all by the layer's.")
@stats_format_option
@model_options
@output_options
def activations_command(model, image, layer, out, index, channels, top, max_maps, cmap, normalize,
                        fmt, model_request):
    """Feature maps of LAYER for one image (Zeiler & Fergus 2014), beside the model's input.

    IMAGE is an image file, or a folder/list/sample set with --index. Each map is labelled
    with its channel and mean activation."""
    import numpy as np

    from cnntool.core.data import open_data
    from cnntool.io.grids import colorize, grid, minmax_scale, side_by_side, to_image
    from cnntool.io.writers import save_image
    from cnntool.tasks.activations import feature_maps

    if channels and top:
        raise CnnToolError("give --channels or --top, not both")
    parse_ranges(channels)  # a malformed list fails before the model loads
    loaded = model_request.load(model)
    dataset = open_data(image)
    if index >= len(dataset):
        raise CnnToolError(f"--index {index} is past the end of {image} ({len(dataset)} images)")
    pixels, _ = dataset.load_pixels(index, loaded.preprocessing)
    inputs = loaded.preprocessing.normalize(pixels).to(loaded.device)
    wanted = parse_indices(channels)
    result = feature_maps(loaded.module, inputs, layer, channels=wanted, top=top, at_most=max_maps)
    if wanted is None and top is None and result.total_channels > max_maps:
        console.info(f"showing the {max_maps} most active of {result.total_channels} channels (--top, --channels)")
    maps = result.maps.numpy()
    low, high = float(maps.min()), float(maps.max())
    scaled = [minmax_scale(m) if normalize == "map" else
              (np.zeros_like(m) if high <= low else (m - low) / (high - low)) for m in maps]
    size = max(32, min(96, 4 * max(maps.shape[1:])))
    labels = [f"{c}: {m:.2g}" for c, m in zip(result.channels, result.means)]
    picture = grid([colorize(m, cmap) for m in scaled], labels, tile_size=size,
                   title=f"{loaded.name} {result.layer} ({cmap}, per {normalize})")
    shown_input = to_image(pixels.permute(1, 2, 0).squeeze(-1).numpy())
    shown_input = shown_input.resize((min(picture.height, 224),) * 2)
    save_image(side_by_side([shown_input, picture]), out)
    console.info(f"{len(result.channels)} of {result.total_channels} maps of {result.layer} for "
                 f"{dataset.paths[index]}; wrote {out}")
    write_records(({"layer": result.layer, "channel": c, "mean": m, "max": x}
                    for c, m, x in zip(result.channels, result.means, result.maxima)), fmt)
