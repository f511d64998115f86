"""`cnntool visualize …`: a lazy group; subcommand NAME lives in cli/visualize_NAME.py."""

from __future__ import annotations

import click

from cnntool.cli.main import LazyGroup

_HELP = {
    "filters": "Learned filters as a grid (conv1 as RGB tiles).",
    "activations": "Feature maps of one layer for one image.",
    "top-patches": (
        "The dataset patches that most excite each unit, cropped to its receptive field."
    ),
    "deconv": "Project a unit back to pixels: deconvnet, guided backprop, saliency, IG, LRP.",
    "maximize": "Synthesize the input that maximizes a unit or class.",
    "cam": (
        "Class activation maps: Grad-CAM, Grad-CAM++, Score-CAM, Layer-CAM, Eigen-CAM, HiResCAM."
    ),
    "occlusion": "Slide a grey square over an image: maps of the class probability, the top class, "
    "a unit.",
    "check": "Which attribution map to trust: deletion/insertion, ROAD, cascading randomization.",
}
# subcommand -> (module:attribute, one-line help)
VISUALIZE_COMMANDS = {
    name: ("cnntool.cli.visualize_{0}:{0}_command".format(name.replace("-", "_")), text)
    for name, text in _HELP.items()
}


@click.group(
    "visualize",
    cls=LazyGroup,
    commands_table=VISUALIZE_COMMANDS,
    epilog="Example: cnntool visualize filters alexnet -o conv1.png",
)
def visualize_group():
    """What has a layer learned? Filters, feature maps, top-activating patches, projections
    back to pixels, and synthesized inputs."""
