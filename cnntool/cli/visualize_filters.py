"""`cnntool visualize filters MODEL`: learned filters as a grid (Krizhevsky 2012, Fig. 3)."""
from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import model_options, output_options, stats_format_option
from cnntool.io.records import write_records


@click.command("filters", epilog="""Examples:

  cnntool visualize filters efficientnet_lite0 --fold-bn -o stem.png

  cnntool visualize filters alexnet --layer conv2 --tiles outputs --format jsonl -o conv2.png
""")
@click.argument("model")
@click.option("--layer", metavar="NAME", help="A convolution (default: the first one).")
@click.option("-o", "--out", required=True, metavar="PNG", help="The grid image to write.")
@click.option("--fold-bn", is_flag=True, help="Fold the following BatchNorm into the filters.")
@click.option("--normalize", type=click.Choice(["filter", "global"]), default="filter", show_default=True,
              help="Scale each filter by its own largest |weight|, or all by the layer's.")
@click.option("--tiles", type=click.Choice(["pairs", "outputs"]), default="pairs", show_default=True,
              help="Layers without 3 input channels: a gray tile per (output, input) pair, "
                   "or one per output (the mean over its inputs).")
@click.option("--max-filters", default=64, show_default=True, type=click.IntRange(1),
              help="Show the first N output filters.")
@click.option("--max-inputs", default=16, show_default=True, type=click.IntRange(1),
              help="With --tiles pairs: the first N input channels.")
@click.option("--tile-size", default=None, type=click.IntRange(4),
              help="Pixels per tile (default: 8 per kernel pixel, at least 32).")
@stats_format_option
@model_options
@output_options
def filters_command(model, layer, out, fold_bn, normalize, tiles, max_filters, max_inputs,
                    tile_size, fmt, model_request):
    """Draw the learned filters of a convolution as a grid (Krizhevsky et al. 2012, Fig. 3).

    Filters with 3 input channels are RGB tiles; others are gray tiles. Weights are shown with
    0 as mid-gray (per filter by default). With --format, per-filter statistics go to stdout:
    L2 norm, mean, std and the largest |correlation| with another filter (near 1 = redundant);
    the mean |correlation| of the layer goes to stderr."""
    import numpy as np

    from cnntool.io.grids import save_grid, symmetric_scale
    from cnntool.tasks.filters import filters

    loaded = model_request.load(model)
    result = filters(loaded.module, layer, fold_bn=fold_bn)
    weight = result.weights[:max_filters].numpy()
    limit = float(np.abs(result.weights.numpy()).max()) if normalize == "global" else None
    outputs, inputs, kh, kw = weight.shape
    if inputs == 3:
        shown = [symmetric_scale(w.transpose(1, 2, 0), limit) for w in weight]
        labels, columns = [str(i) for i in range(outputs)], None
    elif tiles == "outputs":
        shown = [symmetric_scale(w.mean(axis=0), limit) for w in weight]
        labels, columns = [str(i) for i in range(outputs)], None
    else:
        inputs = min(inputs, max_inputs)
        # per-filter scaling covers all of an output's input slices, so they stay comparable
        scales = [limit or float(np.abs(w).max()) for w in weight]
        shown = [symmetric_scale(weight[o, i], scales[o]) for o in range(outputs) for i in range(inputs)]
        labels = [f"{o}:{i}" if inputs > 1 else str(o) for o in range(outputs) for i in range(inputs)]
        columns = inputs if inputs > 1 else None
    size = tile_size or max(32, 8 * max(kh, kw))
    title = f"{loaded.name} {result.layer}" + (f" (+{result.folded} folded)" if result.folded else "")
    save_grid(out, shown, labels, columns=columns, tile_size=size, title=title)
    console.info(f"{len(result.stats)} filters of {result.layer} ({kh}x{kw}, {result.weights.shape[1]} "
                 f"inputs); mean |correlation| between filters {result.mean_abs_corr:.3f}; wrote {out}")
    write_records(({"layer": result.layer, "filter": s.index, "norm": s.norm, "mean": s.mean,
                     "std": s.std, "max_abs_corr": s.max_abs_corr} for s in result.stats), fmt)
