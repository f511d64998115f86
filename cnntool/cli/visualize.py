"""`cnntool visualize …`: a lazy group; each subcommand lives in its own module."""
from __future__ import annotations

import click

from cnntool.cli.main import LazyGroup

# subcommand -> (module:attribute, one-line help)
VISUALIZE_COMMANDS = {
    "filters": ("cnntool.cli.visualize_filters:filters_command",
                "Learned filters as a grid (conv1 as RGB tiles)."),
    "activations": ("cnntool.cli.visualize_activations:activations_command",
                    "Feature maps of one layer for one image."),
    "top-patches": ("cnntool.cli.visualize_top_patches:top_patches_command",
                    "The dataset patches that most excite each unit, cropped to its receptive field."),
    "deconv": ("cnntool.cli.visualize_deconv:deconv_command",
               "Project a unit back to pixels: deconvnet, guided backprop, saliency."),
    "maximize": ("cnntool.cli.visualize_maximize:maximize_command",
                 "Synthesize the input that maximizes a unit or class."),
}


@click.group("visualize", cls=LazyGroup, commands_table=VISUALIZE_COMMANDS,
             epilog="Example: cnntool visualize filters alexnet -o conv1.png")
def visualize_group():
    """What has a layer learned? Filters, feature maps, top-activating patches, projections
    back to pixels, and synthesized inputs."""
