"""`cnntool visualize top-patches MODEL DATA`: the dataset patches that most excite each unit."""
from __future__ import annotations

import sys

import click

from cnntool.cli import console
from cnntool.cli.options import (data_options, load_cli_model, model_options, output_options)
from cnntool.core.selection import parse_indices
from cnntool.errors import CnnToolError


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
    from cnntool.core.sharding import distributed, gather, merged_skipped, shard_stream
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
