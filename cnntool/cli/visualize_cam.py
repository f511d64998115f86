"""`cnntool visualize cam MODEL DATA`: class activation maps (Grad-CAM and relatives) per image."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import limit_option, model_and_data, records_format_option, shared_options


@click.command(
    "cam",
    epilog="""\b
Examples:
  cnntool visualize cam efficientnet_lite0 imagenet-samples -o cams/
  cnntool visualize cam resnet18 photos/ --weights r18.pth --method gradcam++ \\
      --class 'tabby cat' -o cams/
  cnntool visualize cam efficientnet_lite0 photo.jpg --method scorecam --layer _blocks.10 -o cams/
""",
)
@model_and_data
@click.option(
    "--layer",
    metavar="NAME",
    help="Layer whose maps are weighed (default: the last layer with a spatial output, before "
    "global pooling).",
)
@click.option(
    "--method",
    type=click.Choice(["gradcam", "gradcam++", "scorecam", "layercam", "eigencam", "hirescam"]),
    default="gradcam",
    show_default=True,
    help="Grad-CAM (Selvaraju 2017), Grad-CAM++ (Chattopadhay 2018), Score-CAM (Wang 2020; one "
    "forward pass per channel: slow), Layer-CAM (Jiang 2021), Eigen-CAM (Muhammad 2020; no "
    "target), HiResCAM (Draelos 2020).",
)
@click.option(
    "--class",
    "target_class",
    metavar="INDEX|NAME",
    help="Explain this class's pre-softmax logit (default: each image's top prediction).",
)
@click.option(
    "--unit",
    metavar="LAYER:UNIT",
    help="Explain a unit instead: its mean activation (e.g. layer4:17).",
)
@click.option(
    "-o",
    "--out",
    required=True,
    metavar="DIR",
    help="Folder for NNNNN_NAME.png (overlay, colour bar, class in the title) and NNNNN_NAME.npy "
    "(the raw map: h×w float32 at the layer's resolution, before the ReLU).",
)
@limit_option
@shared_options(records_format_option)
def cam_command(
    model, data, layer, method, target_class, unit, out, limit, fmt, model_request, scan
):
    """Class activation maps of DATA's images: where, at LAYER, the evidence for a class (or a
    unit) lies. The map is upsampled to the model input and scaled to [0, 1] per image, as
    pytorch-grad-cam does; it is drawn over the photo as the model sees it. One record per
    image on stdout: path, target class (index and name), score, layer, method, map shape,
    files. Unreadable images are skipped and counted."""
    import sys
    from pathlib import Path

    from cnntool.cli.dataset_scan import OrderedRecords, dataset_scan, finish
    from cnntool.errors import CnnToolError
    from cnntool.io.cam import cam_file_stem, cam_record, save_cam_overlay, save_raw_map
    from cnntool.io.records import RecordWriter
    from cnntool.tasks.cam import cam_batches, cam_layer, unit_target
    from cnntool.tasks.projection import Target

    if target_class is not None and unit is not None:
        raise click.UsageError("give --class or --unit, not both")
    if method == "eigencam" and (target_class is not None or unit is not None):
        raise click.UsageError("eigencam has no target: drop --class/--unit")
    try:
        target = unit_target(unit) if unit else Target.logit(target_class)
    except CnnToolError as exc:
        raise click.BadParameter(str(exc), param_hint="--unit") from None
    writer = RecordWriter(sys.stdout, fmt)
    with dataset_scan(
        model, model_request, data, scan, limit=limit, folders={"-o": out}
    ) as session:
        name = cam_layer(session.module, layer, session.model.input_shape)
        console.info(f"layer: {name}" + ("" if layer else " (the last spatial layer)"))
        written = flat = 0
        records = OrderedRecords(session, writer)
        for indices, pixels, maps in cam_batches(session, name, method, target):
            for index, image, cam in zip(indices, pixels, maps, strict=True):
                path = session.dataset.paths[index]
                stem = Path(out) / cam_file_stem(index, path)
                png, npy = stem.with_suffix(".png"), stem.with_suffix(".npy")
                save_cam_overlay(png, image.numpy(), cam.upsampled(image.shape[1:]).numpy(), cam)
                save_raw_map(npy, cam.raw.numpy())
                written, flat = written + 1, flat + cam.flat
                records.add(index, cam_record(path, cam, png, npy))
        finish(session)
        counts = records.gather((written, flat))
        if counts is None:
            return
    written, flat = counts
    console.info(f"{written} {method} maps of {name}; wrote {out}/*.png and *.npy")
    if flat:
        console.warn(
            f"{flat} of {written} maps are flat (nothing left after the ReLU): the titles say "
            "FLAT; try another --layer or --method"
        )
