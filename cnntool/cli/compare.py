"""`cnntool compare MODEL_A MODEL_B DATA` and `cnntool compare MODEL DATA`: minibatch CKA between
every pair of chosen layers. Thin: scan session(s) -> tasks.compare -> io.compare."""

from __future__ import annotations

import functools

import click

from cnntool.cli import console
from cnntool.cli.options import (
    limit_option,
    names_option,
    pool_option,
    records_format_option,
    shared_options,
)


@click.command(
    "compare",
    epilog="""Examples:

\b
  cnntool compare lenet5-mnist lenet5-mnist-adv mnist-5k -o cka.png
  cnntool compare efficientnet_lite0 photos --kernel linear -o lite0-self.png
  cnntool compare before.pt after.pt val/ --arch resnet18 --layers layer1,layer2,layer3,layer4
  torchrun --nproc_per_node 4 -m cnntool compare resnet18 resnet34 val/ -o cka.png > cka.jsonl
""",
)
@click.argument("specs", nargs=-1, required=True, metavar="MODEL_A [MODEL_B] DATA")
@click.option(
    "--layers",
    metavar="LIST",
    callback=names_option,
    help="Layers (paths or aliases) of both models (default: the first convolution's "
    "activation, the main blocks, the penultimate layer and the logits; in a model without "
    "blocks every conv/linear layer at its activation, and the logits).",
)
@click.option(
    "--layers-a", metavar="LIST", callback=names_option, help="Layers of MODEL_A (the rows)."
)
@click.option(
    "--layers-b",
    metavar="LIST",
    callback=names_option,
    help="Layers of MODEL_B (the columns; against itself, other layers of MODEL).",
)
@click.option(
    "--kernel",
    type=click.Choice(["linear", "rbf", "both"]),
    default="both",
    show_default=True,
    help="Linear CKA, RBF CKA, or both.",
)
@click.option(
    "--rbf-sigma",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    metavar="F",
    help="RBF bandwidth σ = F × the median distance between the images of each minibatch.",
)
@click.option(
    "--minibatch",
    type=click.IntRange(4),
    default=256,
    show_default=True,
    metavar="M",
    help="Images per HSIC minibatch: DATA is split into ⌈N/M⌉ strided minibatches "
    "(k, k+K, k+2K, …); memory grows with M, not with N.",
)
@click.option(
    "--pool",
    default="auto",
    show_default=True,
    callback=pool_option,
    metavar="auto|none|G",
    help="Maps larger than this become rows by average pooling: auto keeps a map of up to "
    "32,768 values whole and pools a larger one to the largest square grid within that; G "
    "pools every map to at most G×G; none keeps every map whole (C·H·W values).",
)
@click.option("-o", "--out", metavar="PNG", help="Write the heat map here.")
@click.option(
    "--scale",
    type=click.Choice(["1", "2"]),
    default="1",
    show_default=True,
    callback=lambda ctx, param, value: int(value),
    help="2: the heat map at twice the size, for print and slides.",
)
@limit_option
@shared_options(records_format_option)
def compare_command(
    specs,
    layers,
    layers_a,
    layers_b,
    kernel,
    rbf_sigma,
    minibatch,
    pool,
    out,
    scale,
    limit,
    fmt,
    model_request,
    scan,
):
    """How similar the representations of two models are, layer by layer: centered kernel
    alignment (CKA; Kornblith et al. 2019) between every layer of MODEL_A and every layer of
    MODEL_B over DATA, or between the layers of one MODEL. CKA is 1 for representations equal up
    to a rotation and a scale, near 0 for unrelated ones. It is computed in minibatches with
    the unbiased HSIC estimator (Song et al. 2012; Nguyen et al. 2021), so memory does not grow
    with DATA. Both models see the same images in the same minibatches, each through its own
    preprocessing; the loading options apply to both. One JSON record per pair goes to stdout,
    the best match of each layer to stderr, the heat map to -o. Under torchrun each rank scans
    whole minibatches and rank 0 writes what one process would."""
    from cnntool.cli.dataset_scan import dataset_scan, finish
    from cnntool.io import compare as outputs
    from cnntool.io.records import write_records
    from cnntool.io.writers import save_image
    from cnntool.tasks.compare import CompareSettings, compare, plan_sides, second_session

    if len(specs) not in (2, 3):
        raise click.UsageError("compare takes MODEL_A MODEL_B DATA, or MODEL DATA")
    spec_a, spec_b, data = (specs[0], None, specs[1]) if len(specs) == 2 else specs
    kernels = ("linear", "rbf") if kernel == "both" else (kernel,)
    settings = CompareSettings(kernels, minibatch, pool, rbf_sigma)
    say_a, say_b = (_naming("A", spec_a), _naming("B", spec_b)) if spec_b else (None, None)
    load_a = functools.partial(model_request.load, spec_a, say=say_a)
    with dataset_scan(
        spec_a, model_request, data, scan, limit=limit, load=load_a, files={"-o": out}
    ) as session:
        other = None
        if spec_b:
            other = second_session(session, model_request.load(spec_b, say=say_b), say_b)
        rows, columns = plan_sides(
            session, other, layers_a or layers, layers_b or layers, pool, (spec_a, spec_b)
        )
        _say_plan(session, other, rows, columns, settings)
        result = compare(
            session,
            other,
            rows,
            columns,
            settings,
            title=f"CKA {spec_a}" + (f" vs {spec_b}" if spec_b else ""),
        )
        finish(session)
        if not session.is_main:
            return
    write_records(outputs.pair_records(result, data), fmt)
    console.show_table(
        f"best matches over {result.images:,} images in {result.minibatches} "
        f"minibatch{'es' if result.minibatches > 1 else ''}",
        outputs.best_match_columns(result),
        outputs.best_match_rows(result),
    )
    for line in outputs.warnings(result):
        console.warn(line)
    if out:
        title = outputs.title(result, data)
        save_image(outputs.heatmap(result, title, scale=scale)[0], out)
        console.info(f"wrote {out}")


def _naming(letter: str, spec: str):
    """A `say` that names which of the two models a line is about."""
    return lambda text, warning: console.say(f"{letter} = {spec}: {text}", warning)


def _say_plan(session, other, rows, columns, settings) -> None:
    """How each layer becomes rows, the minibatches, and how the two models are fed."""
    from cnntool.tasks.compare import Minibatches

    if other is None:
        for layer in [*rows, *(c for c in columns or () if c not in rows)]:
            console.info(layer.describe())
    else:
        for letter, layers in (("A", rows), ("B", columns)):
            for layer in layers:
                console.info(f"{letter}: {layer.describe()}")
    minibatches = Minibatches.of(len(session.dataset), settings.minibatch)
    stride = f" (minibatch k holds images k, k + {minibatches.count}, …)"
    console.info(
        f"{len(session.dataset):,} images in {minibatches.describe()}"
        f"{stride if minibatches.count > 1 else ''}; HSIC₁ per minibatch, summed"
    )
    if "rbf" in settings.kernels:
        console.info(
            f"RBF σ = {settings.rbf_sigma:g} × the median distance between a minibatch's images"
        )
    if other is not None:
        same = other.model.preprocessing == session.model.preprocessing
        console.info(
            "A and B have the same preprocessing: both get the same input tensors"
            if same
            else "A and B have different preprocessing: each reads the images with its own"
        )
