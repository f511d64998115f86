"""`cnntool diagnose MODEL DATA`: the "my network does not work — where do I look?" checklist.
Thin: scan session -> tasks.diagnose (measure, findings) -> io.diagnosis (records, table,
figures)."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import limit_option, model_and_data, names_option, shared_options


@click.command(
    "diagnose",
    epilog="""Examples:

\b
  cnntool diagnose lenet5-mnist mnist-5k --limit 1000 -o diag-lenet/
  cnntool diagnose examples/broken_lenet.py:broken_lenet5 --trust-code mnist-5k --limit 1000 \\
      -o diag-broken/
  cnntool diagnose efficientnet_lite0 imagenet-samples --layers _blocks.15._relu1,_relu1 --gradcheck
  torchrun --nproc_per_node 2 -m cnntool diagnose efficientnet_lite0 photos -q > layers.jsonl
""",
)
@model_and_data
@click.option(
    "--layers",
    metavar="LIST",
    callback=names_option,
    help="Comma-separated layers (paths or aliases) to measure at their outputs (default: every "
    "conv/linear layer but the logits, at the activation that follows it).",
)
@click.option(
    "-o",
    "--out",
    metavar="DIR",
    help="Write units.png (dead/constant/saturated units, sparsity per layer) and "
    "correlation.png (the most correlated layer's units) here.",
)
@limit_option
@click.option(
    "--no-correlation",
    "skip_correlation",
    is_flag=True,
    help="Skip the correlation between units: C² float64 multiply-adds per position, ~5× "
    "the model's own on EfficientNet-Lite0; layers wider than 4096 units skip it anyway.",
)
@click.option(
    "--gradcheck",
    "check_gradients",
    is_flag=True,
    help="Also check the model's gradients against finite differences (float64 copy; "
    "slow for big models) and add the verdict to the findings.",
)
@shared_options()
def diagnose_command(
    model, data, layers, out, limit, skip_correlation, check_gradients, model_request, scan
):
    """Scan DATA once and report, per layer: dead units (never > 0), units that ignore the input
    (variance ≈ 0), units stuck at a bound, Treves–Rolls sparsity, the correlation
    between units, and per convolution filter a noise score, redundancy and norms. Findings
    compare them to thresholds, with the advice they come from and the command that digs deeper.
    A table and the findings go to stderr; one JSON record per layer, then one for the whole
    model, to stdout. Under torchrun each rank scans a shard and rank 0 writes."""
    from cnntool.cli.dataset_scan import dataset_scan, finish
    from cnntool.cli.followups import Commands, spelled_model
    from cnntool.io import diagnosis as outputs
    from cnntool.io.records import write_records
    from cnntool.tasks.diagnose import diagnose
    from cnntool.tasks.diagnose.measure import gradient_check, measure, model_size

    with dataset_scan(
        model, model_request, data, scan, limit=limit, folders={"-o": out}
    ) as session:
        loaded, module = session.model, session.module
        points, states = measure(session, layers, correlation=not skip_correlation)
        report = finish(session)
        if not session.is_main:
            return
        gradients = (
            gradient_check(module, loaded.input_shape, console.progress)
            if check_gradients
            else None
        )
        diagnosis = diagnose(
            module,
            points,
            states,
            Commands(spelled_model(model, model_request), data),
            gradcheck_result=gradients,
            params_macs=model_size(module, loaded.input_shape),
        )
    write_records(outputs.records(loaded.name, diagnosis, len(report.skipped)), "jsonl")
    console.show(outputs.diagnosis_table(loaded.name, diagnosis))
    for text in outputs.findings_text(diagnosis):
        console.info(text)
    if diagnosis.unreached:
        console.warn(
            "never ran in the forward pass (not measured): " + ", ".join(diagnosis.unreached)
        )
    if out:
        console.info(
            "wrote " + ", ".join(str(p) for p in outputs.save_figures(out, loaded.name, diagnosis))
        )
