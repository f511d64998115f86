"""`cnntool visualize top-patches MODEL DATA`: the dataset patches that most excite each unit."""
from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import data_options, model_options, output_options
from cnntool.core.selection import parse_indices, parse_ranges


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
                        tile_size, model_request, scan):
    """The patches of DATA that most excite each unit of LAYER (R-CNN, Fig. 3).

    Every image is scanned; for each unit the top activations are kept with their image and
    position, and each hit is cropped to the unit's receptive field mapped back to the
    ORIGINAL image (zero-padded past its border). A layer without a local field (after global
    pooling or a linear layer) shows the whole model input. JSON Lines on stdout: unit, rank,
    path, box (x0, y0, x1, y1 in original pixels), value, index, position. Under torchrun each
    rank scans a shard and rank 0 writes the merged result."""
    from pathlib import Path

    from cnntool.cli.session import dataset_scan, finish, tidy
    from cnntool.core.layers import resolve_layer
    from cnntool.core.receptive_field import receptive_fields
    from cnntool.io.resume import ScanLock, StateFile, dataset_fingerprint
    from cnntool.tasks.profile import output_shape
    from cnntool.tasks.top_patches import TopK, TopPatchConsumer, merged, resume_position

    parse_ranges(units)  # a malformed list fails before the model loads
    tidy(out, folders=True)

    with dataset_scan(model, model_request, data, scan) as session:
        loaded, shard, dataset = session.model, session.shard, session.dataset
        name = resolve_layer(session.module, layer)[0]
        field = receptive_fields(session.module, loaded.input_shape).get(name)
        if field is None:
            console.warn(f"layer {name} has no local receptive field (global pooling, linear or "
                         "squeeze-excite gating): patches show the whole model input")
        shape = output_shape(session.module, name, loaded.input_shape)
        chosen = parse_indices(units, shape[1] if shape and len(shape) > 1 else None, what="unit")
        suffix = f".rank{shard.rank}" if shard.distributed else ""
        key = dict(model=loaded.name, layer=name, units=units, top=top, per_image=per_image,
                   data=dataset.name, images=len(dataset), world=shard.world_size)
        state_file = StateFile(out, f".top-patches-state{suffix}.pt", key, dataset_fingerprint(dataset))
        with ScanLock(Path(out) / f".top-patches{suffix}.lock"):
            saved = state_file.load() if resume else None
            if resume and saved is None:
                console.warn(f"no state file {state_file.path}: starting from the beginning")
            state = TopK.from_state(saved["topk"]) if saved else None
            start = int(saved["next"]) if saved else 0
            if state is not None:
                console.info(f"resuming after {start} images")
                session.read += state.seen
            consumer = TopPatchConsumer(name, units=chosen, top=top, per_image=per_image, state=state)
            batches = [0]

            def checkpoint(batch):
                batches[0] += 1
                if batches[0] % checkpoint_every == 0:
                    state_file.save({"topk": consumer.state.state_dict(), "next": resume_position(
                        batch.indices[-1], shard.rank, shard.world_size)})

            session.run([consumer], f"top patches {name}", start=start, on_batch=checkpoint)
            if consumer.state is not None and batches[0]:
                # the whole shard is in: a failure while writing can resume without scanning again
                state_file.save({"topk": consumer.state.state_dict(), "next": session.count()})
            states = session.gather(consumer.state.state_dict() if consumer.state else None)
            finish(session)
            if session.is_main:
                _write(merged(states), loaded, dataset, name, chosen, field, out, tile_size)
            state_file.remove()


def _write(merged_state, loaded, dataset, layer, chosen, field, out, tile_size) -> None:
    """Rank 0: crop the hits from the original images, write the pictures and the records."""
    from cnntool.io.patches import write_top_patches
    from cnntool.io.records import write_records
    from cnntool.tasks.top_patches import top_patches

    units = chosen if chosen is not None else list(range(merged_state.values.shape[0]))
    result = top_patches(merged_state, layer=layer, units=units, field=field,
                         preprocessing=loaded.preprocessing)
    drawn, lost = write_top_patches(out, result, dataset.load, title=f"{loaded.name} {layer}",
                                    tile_size=tile_size)
    write_records(({"unit": hit.unit, "rank": hit.rank, "path": dataset.paths[hit.index],
                    "box": hit.box, "value": hit.value, "index": hit.index,
                    "position": hit.position} for hit in drawn), "jsonl")
    console.info(f"{merged_state.seen} images scanned, {len(result.units)} units; wrote "
                 f"{out}/unit_*.png and overview.png")
    if lost:
        console.warn(f"{len(lost)} patch(es) left out: their image could not be read any more, "
                     f"e.g. {lost[0]}")
