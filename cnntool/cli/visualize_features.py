"""`cnntool visualize filters | activations | top-patches`: what has a layer learned?

Thin commands: parse -> core -> task -> io. torch is imported inside the functions so that
`--help` stays instant.
"""
from __future__ import annotations

import sys

import click

from cnntool.cli import console
from cnntool.cli.options import data_options, load_cli_model, model_options, output_options
from cnntool.errors import CnnToolError


def parse_indices(text: str | None, count: int | None = None) -> list[int] | None:
    """'0-15,42' -> [0, …, 15, 42]; 'all' or None -> None (every one)."""
    if text is None or text.strip().lower() == "all":
        return None
    chosen: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if "-" in part[1:]:
                low, high = (int(v) for v in part.split("-", 1))
                if high < low:
                    raise ValueError
                chosen.extend(range(low, high + 1))
            else:
                chosen.append(int(part))
    except ValueError:
        raise CnnToolError(f"'{text}' is not a list of indices like 0-15,42") from None
    if not chosen:
        raise CnnToolError("the index list is empty")
    return list(dict.fromkeys(chosen))


_STATS_FORMAT = click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
                             help="Also print one record per filter/map on stdout.")


def _write_records(records, fmt) -> None:
    from cnntool.io.writers import RecordWriter

    if fmt:
        RecordWriter(sys.stdout, fmt).write_all(records)


# ---------------------------------------------------------------------------------------------
# filters

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
@_STATS_FORMAT
@model_options
@output_options
def filters_command(model, layer, out, fold_bn, normalize, tiles, max_filters, max_inputs,
                    tile_size, fmt, arch, weights, trust_code, device):
    """Draw the learned filters of a convolution as a grid (Krizhevsky et al. 2012, Fig. 3).

    Filters with 3 input channels are RGB tiles; others are gray tiles. Weights are shown with
    0 as mid-gray (per filter by default). With --format, per-filter statistics go to stdout:
    L2 norm, mean, std and the largest |correlation| with another filter (near 1 = redundant);
    the mean |correlation| of the layer goes to stderr."""
    import numpy as np

    from cnntool.io.grids import save_grid, symmetric_scale
    from cnntool.tasks.filters import filters

    loaded = load_cli_model(model, arch=arch, weights=weights, device=device, trust_code=trust_code)
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
    _write_records(({"layer": result.layer, "filter": s.index, "norm": s.norm, "mean": s.mean,
                     "std": s.std, "max_abs_corr": s.max_abs_corr} for s in result.stats), fmt)


# ---------------------------------------------------------------------------------------------
# activations

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
@_STATS_FORMAT
@model_options
@output_options
def activations_command(model, image, layer, out, index, channels, top, max_maps, cmap, normalize,
                        fmt, arch, weights, trust_code, device):
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
    loaded = load_cli_model(model, arch=arch, weights=weights, device=device, trust_code=trust_code)
    dataset = open_data(image)
    if index >= len(dataset):
        raise CnnToolError(f"--index {index} is past the end of {image} ({len(dataset)} images)")
    pixels = loaded.preprocessing.to_pixels(dataset.load(index))
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
    _write_records(({"layer": result.layer, "channel": c, "mean": m, "max": x}
                    for c, m, x in zip(result.channels, result.means, result.maxima)), fmt)


# ---------------------------------------------------------------------------------------------
# top-patches

@click.command("top-patches", epilog="""Examples:

  cnntool visualize top-patches efficientnet_lite0 photos --layer _blocks.10 --units 0-7 --top 6 -o patches/

  cnntool visualize top-patches lenet5-mnist mnist-5k --layer conv2 --units 0-15 -o mnist-patches/ --resume

  torchrun --nproc_per_node 2 -m cnntool visualize top-patches alexnet imagenet-samples --layer pool5 -o p5/
""")
@click.argument("model")
@click.argument("data")
@click.option("--layer", required=True, metavar="NAME", help="Layer path or alias (e.g. pool5).")
@click.option("--units", default="0-15", show_default=True, metavar="LIST",
              help="Channels to scan, e.g. 0-15,42, or all.")
@click.option("--top", default=9, show_default=True, type=click.IntRange(1), help="Patches per unit.")
@click.option("--per-image", default=1, show_default=True, type=click.IntRange(1),
              help="Patches one image may give one unit (1 as in R-CNN).")
@click.option("-o", "--out", required=True, metavar="DIR",
              help="Folder for unit_NNNN.png grids, overview.png and the resume state.")
@click.option("--resume", is_flag=True, help="Continue an interrupted scan from its state file in DIR.")
@click.option("--checkpoint-every", default=20, show_default=True, type=click.IntRange(1),
              help="Save the resume state every N batches.")
@click.option("--tile-size", default=96, show_default=True, type=click.IntRange(8), help="Pixels per patch.")
@model_options
@data_options
@output_options
def top_patches_command(model, data, layer, units, top, per_image, out, resume, checkpoint_every,
                        tile_size, arch, weights, trust_code, device, batch_size, workers):
    """The patches of DATA that most excite each unit of LAYER (R-CNN, Fig. 3).

    Every image is scanned; for each unit the top activations are kept with their image and
    position, and each hit is cropped to the unit's receptive field mapped back to the
    ORIGINAL image (zero-padded past its border). A layer without a local field (after global
    pooling or a linear layer) shows the whole model input. JSON Lines on stdout: unit, rank,
    path, box (x0, y0, x1, y1 in original pixels), value, index, position. Under torchrun each
    rank scans a shard and rank 0 writes the merged result."""
    from cnntool.core.data import open_data
    from cnntool.core.layers import resolve_layer
    from cnntool.core.receptive_field import receptive_fields
    from cnntool.core.scan import distributed, gather, merged_skipped, shard_stream
    from cnntool.tasks.top_patches import scan

    loaded = load_cli_model(model, arch=arch, weights=weights, device=device, trust_code=trust_code)
    with distributed(loaded.device) as shard:
        if not shard.is_main:
            console.set_quiet(True)
        module = loaded.module.to(shard.device)
        name = resolve_layer(module, layer)[0]
        field = receptive_fields(module, loaded.input_shape).get(name)
        if field is None:
            console.warn(f"layer {name} has no local receptive field (global pooling, linear or "
                         "squeeze-excite gating): patches show the whole model input")
        dataset = open_data(data)
        chosen = parse_indices(units)
        state_file = _StateFile(out, shard, key=dict(model=loaded.name, layer=name, units=units, top=top,
                                                     per_image=per_image, data=dataset.name,
                                                     images=len(dataset), world=shard.world_size))
        state, start = state_file.load() if resume else (None, 0)
        stream = shard_stream(dataset, loaded.preprocessing, shard, batch_size=batch_size,
                              workers=workers, start=start)
        if state:
            console.info(f"resuming after {start} images")
        with console.progress(f"top patches {name}", total=stream.total) as advance:
            batches_done = [0]

            def on_batch(topk, batch):
                advance(len(batch.indices))
                batches_done[0] += 1
                if batches_done[0] % checkpoint_every == 0:
                    # where to go on in this shard: after the batch's last (readable) image
                    state_file.save(topk, (batch.indices[-1] - shard.rank) // shard.world_size + 1)

            state = scan(module, name, stream, units=chosen, top=top, per_image=per_image,
                         state=state, device=shard.device, on_batch=on_batch)
        if state is not None and batches_done[0]:
            # the whole shard is in: a failure while writing can resume without scanning again
            state_file.save(state, len(shard.indices(len(dataset))))
        states = gather(state.state_dict() if state else None, shard)
        skipped = merged_skipped(stream.skipped, shard)
        if shard.is_main:
            _finish(states, skipped, loaded, dataset, name, chosen, top, field, out, tile_size)
        state_file.remove()


class _StateFile:
    """The resume state of one rank: the running TopK, where in the shard to go on, and the
    settings it belongs to. Images skipped before the interruption are not counted again."""

    def __init__(self, out, shard, key: dict):
        from pathlib import Path

        suffix = f".rank{shard.rank}" if shard.distributed else ""
        self.path, self.key = Path(out) / f".top-patches-state{suffix}.pt", key

    def load(self):
        import torch

        from cnntool.tasks.top_patches import TopK

        if not self.path.exists():
            console.warn(f"no state file {self.path}: starting from the beginning")
            return None, 0
        saved = torch.load(self.path, weights_only=True)
        if saved.get("key") != self.key:
            raise CnnToolError(f"{self.path} belongs to another scan ({saved.get('key')}); "
                               "remove it or drop --resume")
        return TopK.from_state(saved["state"]), int(saved["next"])

    def save(self, topk, next_position: int) -> None:
        import torch

        from cnntool.io.writers import atomic_path

        with atomic_path(self.path) as temp:
            torch.save({"key": self.key, "state": topk.state_dict(), "next": next_position}, temp)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _finish(states, skipped, loaded, dataset, layer, chosen, top, field, out, tile_size) -> None:
    """Rank 0: merge the ranks' states, write grids, overview and records."""
    from pathlib import Path

    from cnntool.errors import DataError
    from cnntool.io.grids import grid, save_grid
    from cnntool.io.writers import RecordWriter, save_image
    from cnntool.tasks.top_patches import TopK, top_patches

    parts = [TopK.from_state(s) for s in states if s is not None]
    if not parts:
        raise DataError(f"none of the {len(dataset)} images in {dataset.name} could be read")
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    units = chosen if chosen is not None else list(range(merged.values.shape[0]))
    result = top_patches(merged, layer=layer, units=units, field=field,
                         preprocessing=loaded.preprocessing)
    out = Path(out)
    writer = RecordWriter(sys.stdout, "jsonl")
    overview, overview_labels = [], []
    columns = min(top, 8)
    for unit, hits in zip(result.units, result.hits):
        patches = [_patch(dataset, hit) for hit in hits]
        labels = [f"{hit.value:.3g}" for hit in hits]
        if patches:
            save_grid(out / f"unit_{unit:04d}.png", patches, labels, tile_size=tile_size,
                      title=f"{loaded.name} {layer} unit {unit}")
        shown = patches[:columns] + [_blank()] * (columns - len(patches[:columns]))
        overview.extend(shown)
        overview_labels.extend([f"u{unit}"] + [""] * (columns - 1))
        for hit in hits:
            writer.write({"unit": unit, "rank": hit.rank, "path": dataset.paths[hit.index],
                          "box": hit.box, "value": hit.value, "index": hit.index,
                          "position": hit.position})
    save_image(grid(overview, overview_labels, columns=columns, tile_size=min(tile_size, 64),
                    title=f"{loaded.name} {layer}: top {columns} per unit"), out / "overview.png")
    console.info(f"{merged.seen} images scanned, {len(result.units)} units; wrote {out}/unit_*.png "
                 "and overview.png")
    if skipped:
        console.warn(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0][0]}")


def _patch(dataset, hit):
    """The hit's box cropped from the original image; PIL fills outside the image with zeros."""
    image = dataset.load(hit.index).convert("RGB")
    return image.crop(hit.box)


def _blank():
    from PIL import Image

    return Image.new("RGB", (1, 1), (255, 255, 255))
