"""`cnntool visualize occlusion MODEL IMAGE`: slide a grey square over an image (Zeiler &
Fergus)."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import records_format_option, shared_options


@click.command(
    "occlusion",
    epilog="""\b
Examples:
  cnntool visualize occlusion efficientnet_lite0 imagenet-samples --index 3 -o occlusion.png
  cnntool visualize occlusion resnet18 dog.jpg --weights r18.pth --class 'golden retriever' \\
      --unit layer4 -o occ.png
  cnntool visualize occlusion efficientnet_lite0 photo.jpg --size 48 --stride 16 --fill mean \\
      --raw occ.npz -o occ.png
""",
)
@click.argument("model")
@click.argument("image")
@click.option(
    "--index",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Which image of a folder, list or set.",
)
@click.option(
    "--size",
    default=32,
    show_default=True,
    type=click.IntRange(1),
    help="Occluder side, in model-input pixels.",
)
@click.option(
    "--stride",
    default=8,
    show_default=True,
    type=click.IntRange(1),
    help="Step between occluder positions (at most --size).",
)
@click.option(
    "--fill",
    type=click.Choice(["grey", "mean", "0"]),
    default="grey",
    show_default=True,
    help="Occluder colour: grey (0.5, as Zeiler & Fergus), the image's mean colour, or 0 (a zero "
    "model "
    "input: the normalization mean, captum's default baseline).",
)
@click.option(
    "--class",
    "target_class",
    metavar="INDEX|NAME",
    help="Map this class's probability (default: the top prediction on the unoccluded image).",
)
@click.option(
    "--unit",
    metavar="LAYER[:UNIT]",
    help="Also map a unit's mean activation (LAYER alone: its most active channel unoccluded).",
)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    metavar="PNG",
    help="The figure: input, class probability, most probable class[, unit], titled, with colour "
    "bars.",
)
@click.option(
    "--raw",
    type=click.Path(dir_okay=False),
    metavar="FILE.npz",
    help="Also save the maps (probability, top_class, top_probability, unit, rows, cols).",
)
@click.option(
    "--batch-size",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Occluded copies per forward pass.",
)
@shared_options(records_format_option, data=False)
def occlusion_command(
    model,
    image,
    index,
    size,
    stride,
    fill,
    target_class,
    unit,
    out,
    raw,
    batch_size,
    fmt,
    model_request,
):
    """Occlusion sensitivity (Zeiler & Fergus 2014, Fig. 7): a square occluder slides over the
    model input; at each position the occluded copy is classified. Maps: the class's
    probability, the most probable class, and optionally a unit's mean activation. Windows
    past the border are clipped (captum's convention). One record on stdout."""
    from pathlib import Path

    from cnntool.cli.dataset_scan import guard
    from cnntool.core.data import open_data
    from cnntool.errors import CnnToolError
    from cnntool.io.cam import save_occlusion_figure, save_occlusion_maps
    from cnntool.io.outputs import InputFiles
    from cnntool.io.records import write_records
    from cnntool.tasks.cam import unit_target
    from cnntool.tasks.occlusion import check_window, occlude_image
    from cnntool.tasks.projection import Target

    if stride > size:
        raise click.BadParameter(
            f"a stride ({stride}) larger than the occluder ({size}) leaves pixels never occluded",
            param_hint="--stride",
        )
    try:
        chosen_unit = (
            None
            if unit is None
            else unit_target(unit)
            if ":" in unit
            else Target.unit_of(unit.strip())
        )
    except CnnToolError as exc:
        raise click.BadParameter(str(exc), param_hint="--unit") from None
    dataset = open_data(image)  # before the model: cheap, and the outputs are checked against it
    guard(InputFiles.of_data(image, dataset), files={"-o": out, "--raw": raw})
    loaded = model_request.load(model)
    pixels, _ = dataset.load_pixels(index, loaded.preprocessing)
    check_window(size, stride, *pixels.shape[1:])
    result = occlude_image(
        loaded,
        pixels,
        size=size,
        stride=stride,
        fill=fill,
        target=Target.logit(target_class),
        unit=chosen_unit,
        batch_size=batch_size,
    )
    path = dataset.paths[index]
    save_occlusion_figure(out, pixels.numpy(), result, image_name=Path(path).name)
    if raw:
        save_occlusion_maps(raw, result)
    write_records(
        [
            {
                "path": path,
                **result.to_record(),
                "file": str(out),
                **({"raw": str(raw)} if raw else {}),
            }
        ],
        fmt,
    )
    console.info(
        f"{len(result.rows) * len(result.cols)} occluder positions; wrote {out}"
        + (f" and {raw}" if raw else "")
    )
