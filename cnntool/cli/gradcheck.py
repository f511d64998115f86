"""`cnntool gradcheck MODEL`: autograd's gradients against finite differences; exit 1 if wrong."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import format_option, shared_options


@click.command(
    "gradcheck",
    epilog="""\b
Examples:
  cnntool gradcheck lenet5-mnist
  cnntool gradcheck resnet18 --input-size 64 --per-layer --format table
  cnntool gradcheck my_layers.py:Net --trust-code --per-layer -q || echo "a gradient is wrong"
""",
)
@click.argument("model")
@click.option(
    "--batch", default=2, show_default=True, type=click.IntRange(1), help="Inputs per forward pass."
)
@click.option(
    "--per-layer",
    is_flag=True,
    help="Check every module alone, on the activations it sees in the real forward "
    "pass, so that a failure names the module.",
)
@click.option("--params", "only_params", is_flag=True, help="Check only the parameters.")
@click.option("--inputs", "only_inputs", is_flag=True, help="Check only the input(s).")
@click.option(
    "--layer",
    metavar="NAME",
    help="Differentiate a random-weighted sum of this "
    "layer's output instead of the cross-entropy of the logits.",
)
@click.option(
    "--directions",
    default=3,
    show_default=True,
    type=click.IntRange(0),
    help="Directional checks per tensor (the first along autograd's gradient).",
)
@click.option(
    "--coordinates",
    default=2,
    show_default=True,
    type=click.IntRange(0),
    help="Single-element checks per tensor.",
)
@click.option("--eps", default=1e-6, show_default=True, type=float, help="Finite-difference step.")
@click.option("--rtol", default=1e-3, show_default=True, type=float, help="Relative tolerance.")
@click.option("--atol", default=1e-8, show_default=True, type=float, help="Absolute tolerance.")
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Seeds the input, labels and directions: same seed, same result.",
)
@shared_options(format_option(default="jsonl"), data=False)
@click.pass_context
def gradcheck_command(
    ctx,
    model,
    batch,
    per_layer,
    only_params,
    only_inputs,
    layer,
    directions,
    coordinates,
    eps,
    rtol,
    atol,
    seed,
    fmt,
    model_request,
):
    """Check the gradients MODEL computes against central finite differences, in float64 on a
    copy of the model (eval mode, seeded inputs). A check passes when
    |autograd - numeric| <= atol + rtol*max(|autograd|, |numeric|). A check whose step crosses
    a ReLU/max-pool/clamp kink is inconclusive and re-drawn, never a failure. One JSON record
    per tensor on stdout; exit code 1 when any gradient is wrong."""
    from cnntool.io import gradcheck_report as report
    from cnntool.tasks.gradcheck import gradcheck

    if only_params and only_inputs:
        raise click.UsageError(
            "--params and --inputs each leave the other out; give one, or neither to check both"
        )
    loaded = model_request.load(model, weights_matter=False, images=False, run=True)
    console.info(report.plan(loaded, batch, per_layer, seed))
    with console.progress("checking gradients", total=None) as advance:
        result = gradcheck(
            loaded.module,
            loaded.input_shape,
            batch=batch,
            layer=layer,
            per_layer=per_layer,
            params=not only_inputs,
            inputs=not only_params,
            directions=directions,
            coordinates=coordinates,
            eps=eps,
            rtol=rtol,
            atol=atol,
            seed=seed,
            progress=lambda _result: advance(1),
        )
    report.write(result, loaded.name, fmt, show=console.show_table)
    for level, text in report.messages(result):
        getattr(console, level)(text)
    if not result.ok:
        ctx.exit(1)
