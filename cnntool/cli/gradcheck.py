"""`cnntool gradcheck MODEL`: autograd's gradients against finite differences; exit 1 if wrong."""
from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import format_option, model_options, output_options
from cnntool.io.records import Column, write_records

CSV_COLUMNS = ["module", "tensor", "shape", "verdict", "checks", "passed", "failed",
               "inconclusive", "kinks", "max_rel_err", "max_abs_err", "mode", "eps", "rtol", "atol"]
_VERDICT_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}


@click.command("gradcheck", epilog="""Examples:

  cnntool gradcheck lenet5-mnist

  cnntool gradcheck resnet18 --input-size 64 --per-layer --format table

  cnntool gradcheck my_layers.py:Net --trust-code --per-layer -q || echo "a gradient is wrong"
""")
@click.argument("model")
@click.option("--batch", default=2, show_default=True, type=click.IntRange(1),
              help="Inputs per forward pass.")
@click.option("--per-layer", is_flag=True,
              help="Check every module alone, on the activations it sees in the real forward "
                   "pass, so that a failure names the module.")
@click.option("--params", "only_params", is_flag=True, help="Check only the parameters.")
@click.option("--inputs", "only_inputs", is_flag=True, help="Check only the input(s).")
@click.option("--layer", metavar="NAME", help="Differentiate a random-weighted sum of this "
              "layer's output instead of the cross-entropy of the logits.")
@click.option("--directions", default=3, show_default=True, type=click.IntRange(0),
              help="Directional checks per tensor (the first along autograd's gradient).")
@click.option("--coordinates", default=2, show_default=True, type=click.IntRange(0),
              help="Single-element checks per tensor.")
@click.option("--eps", default=1e-6, show_default=True, type=float, help="Finite-difference step.")
@click.option("--rtol", default=1e-3, show_default=True, type=float, help="Relative tolerance.")
@click.option("--atol", default=1e-8, show_default=True, type=float, help="Absolute tolerance.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seeds the input, labels and directions: same seed, same result.")
@format_option(default="jsonl")
@model_options
@output_options
@click.pass_context
def gradcheck_command(ctx, model, batch, per_layer, only_params, only_inputs, layer, directions,
                      coordinates, eps, rtol, atol, seed, fmt, model_request):
    """Check the gradients MODEL computes against central finite differences, in float64 on a
    copy of the model (eval mode, seeded inputs). A check passes when
    |autograd - numeric| <= atol + rtol*max(|autograd|, |numeric|). A check whose step crosses
    a ReLU/max-pool/clamp kink is inconclusive and re-drawn, never a failure. One JSON record
    per tensor on stdout; exit code 1 when any gradient is wrong."""
    from cnntool.tasks.gradcheck import gradcheck

    if only_params and only_inputs:
        raise click.UsageError("--params and --inputs each leave the other out; give one, or "
                               "neither to check both")
    loaded = model_request.load(model, weights_matter=False, images=False, run=True)
    shape = loaded.input_shape
    what = "every module alone" if per_layer else "the whole model"
    console.info(f"{loaded.name}: checking {what} on a float64 copy on {loaded.device} "
                 f"(the model itself is unchanged), input {batch}×{'×'.join(map(str, shape))}, "
                 f"seed {seed}")
    with console.progress("checking gradients", total=None) as advance:
        result = gradcheck(loaded.module, shape, batch=batch, layer=layer, per_layer=per_layer,
                           params=not only_inputs, inputs=not only_params,
                           directions=directions, coordinates=coordinates, eps=eps, rtol=rtol,
                           atol=atol, seed=seed, progress=lambda _result: advance(1))
    _write(result, loaded.name, fmt)
    for warning in result.warnings:
        console.warn(warning)
    if result.skipped:
        console.warn("not checked: " + "; ".join(f"{s.path} ({s.reason})" for s in result.skipped[:5])
                     + (f"; and {len(result.skipped) - 5} more" if len(result.skipped) > 5 else ""))
    _summary(result)
    if not result.ok:
        ctx.exit(1)


def _write(result, name: str, fmt: str) -> None:
    def err(value: float | None) -> str:
        return "—" if value is None else f"{value:.1e}"

    columns = [Column("module", lambda t: t.module or "(model)"), Column("tensor", lambda t: t.name),
               Column("shape", lambda t: "×".join(map(str, t.shape))),
               Column("checks", lambda t: len(t.checks), right=True),
               Column("incon.", lambda t: t.count("inconclusive"), right=True),
               Column("rel err", lambda t: err(t.max_rel_err), right=True),
               Column("abs err", lambda t: err(t.max_abs_err), right=True),
               Column("verdict", lambda t: f"[{_VERDICT_STYLE[t.verdict]}]{t.verdict.upper()}[/]",
                      right=True)]
    table = dict(title=f"gradcheck {name} ({result.mode})",
                 caption=f"loss: {result.loss}; {result.tolerances.describe()}; errors: the "
                         "largest over a tensor's conclusive checks")
    if fmt == "table":
        write_records(result.tensors, "table", table_columns=columns, **table)
        return
    console.show_table(table["title"], columns, result.tensors, caption=table["caption"])
    records = result.to_records()
    if fmt == "csv":
        records = [{**r, "shape": "x".join(map(str, r["shape"]))} for r in records]
    write_records(records, fmt, columns=CSV_COLUMNS if fmt == "csv" else None)


def _summary(result) -> None:
    counts = {v: sum(t.verdict == v for t in result.tensors) for v in _VERDICT_STYLE}
    console.info(f"{len(result.tensors)} tensors: {counts['pass']} pass, "
                 f"{counts['inconclusive']} inconclusive, {counts['fail']} fail")
    if result.failures:
        worst = sorted(result.failures, key=lambda t: -t.max_rel_err)
        console.error("wrong gradients: " + ", ".join(
            f"{t.path} (rel err {t.max_rel_err:.1e})" for t in worst[:8])
            + (f" and {len(worst) - 8} more" if len(worst) > 8 else ""))
