"""`cnntool visualize top-patches MODEL DATA`: the dataset patches that most excite each unit."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import model_and_data, shared_options
from cnntool.core.selection import parse_ranges


@click.command(
    "top-patches",
    epilog="""\b
Examples:
  cnntool visualize top-patches efficientnet_lite0 photos --layer _blocks.10 --units 0-7 --top 6 \\
      -o patches/
  cnntool visualize top-patches lenet5-mnist mnist-5k --layer conv2 --units 0-15 \\
      -o mnist-patches/ --resume
  torchrun --nproc_per_node 2 -m cnntool visualize top-patches alexnet imagenet-samples \\
      --layer pool5 -o p5/
""",
)
@model_and_data
@click.option("--layer", required=True, metavar="NAME", help="Layer path or alias (e.g. pool5).")
@click.option(
    "--units",
    default="0-15",
    show_default=True,
    metavar="LIST",
    help="Channels to scan, e.g. 0-15,42, or all.",
)
@click.option(
    "--top", default=9, show_default=True, type=click.IntRange(1), help="Patches per unit."
)
@click.option(
    "--per-image",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Patches one image may give one unit (1 as in R-CNN).",
)
@click.option(
    "-o",
    "--out",
    required=True,
    metavar="DIR",
    help="Folder for unit_NNNN.png grids, overview.png and the resume state.",
)
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted scan from its state file in DIR."
)
@click.option(
    "--checkpoint-every",
    default=20,
    show_default=True,
    type=click.IntRange(1),
    help="Save the resume state every N batches.",
)
@click.option(
    "--tile-size", default=96, show_default=True, type=click.IntRange(8), help="Pixels per patch."
)
@click.option(
    "--overlay/--no-overlay",
    default=None,
    help="Add to unit_NNNN.png a row of the unit's activation map over each hit's whole "
    "image (default: where the field is larger than half the input).",
)
@shared_options()
def top_patches_command(
    model,
    data,
    layer,
    units,
    top,
    per_image,
    out,
    resume,
    checkpoint_every,
    tile_size,
    overlay,
    model_request,
    scan,
):
    """The patches of DATA that most excite each unit of LAYER (R-CNN, Fig. 3), each cropped to
    the unit's receptive field mapped back to the ORIGINAL image (zero-padded past its border;
    the whole model input for a layer without a local field). JSON Lines on stdout: unit, rank,
    path, box (x0, y0, x1, y1 in original pixels), value, index, position. Under torchrun each
    rank scans a shard and rank 0 writes the merged result. Only positive activations are hits
    (fewer shown as "N of K"; none: dead), at most --per-image per image. Where the field is
    larger than half the input (deep layers), a patch is half the input's side centred on the
    peak instead of the whole image."""
    from cnntool.cli.dataset_scan import dataset_scan, finish
    from cnntool.io.patches import lost_warning, write_top_patch_files
    from cnntool.io.resume import ResumeFiles
    from cnntool.tasks.top_patches import (
        hit_maps,
        layer_plan,
        no_field_warning,
        peak_cropped,
        resumable_top_patches,
    )

    parse_ranges(units)  # a malformed list fails before the model loads
    with dataset_scan(model, model_request, data, scan, folders={"-o": out}) as session:
        name, field, chosen = layer_plan(session.module, layer, units, session.model.input_shape)
        if field is None:
            console.warn(no_field_warning(session.module, name, session.model.input_shape))
        files = ResumeFiles(out, "top-patches", session.shard.rank, session.shard.distributed)
        result = resumable_top_patches(
            session,
            files,
            name,
            chosen,
            field,
            listed=units,
            top=top,
            per_image=per_image,
            resume=resume,
            every=checkpoint_every,
        )
        finish(session)
        if session.is_main:
            maps = None
            if overlay or (overlay is None and peak_cropped(field, session.model.preprocessing)):
                maps = hit_maps(
                    session.module,
                    name,
                    chosen,
                    (h.index for h in result.records()),
                    session.dataset,
                    session.model.preprocessing,
                )
            lost = write_top_patch_files(
                out,
                result,
                session.dataset,
                tile_size=tile_size,
                title=f"{session.model.name} {name}",
                overlays=maps,
            )
            console.info(
                f"{result.seen} images scanned, {len(result.units)} units; wrote "
                f"{out}/unit_*.png and overview.png"
            )
            if result.dead:
                console.warn(
                    f"{len(result.dead)} unit(s) dead (never positive in {result.seen} "
                    f"images): {', '.join(map(str, result.dead))}"
                )
            if lost:
                console.warn(lost_warning(lost))
        files.remove()
