"""`cnntool diagnose MODEL DATA`: the "my network does not work — where do I look?" checklist.

Thin: parse -> core (model, data, shards) -> tasks.diagnose (scan, merge, findings) -> io.
torch is imported inside the function so that `--help` stays instant.
"""
from __future__ import annotations


import click

from cnntool.cli import console
from cnntool.cli.options import data_options, model_options, output_options
from cnntool.io.records import Column, write_records
from cnntool.errors import CnnToolError

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


@click.command("diagnose", epilog="""Examples:

  cnntool diagnose lenet5-mnist mnist-5k --limit 1000 -o diag-lenet/

  cnntool diagnose examples/broken_lenet.py:broken_lenet5 --trust-code mnist-5k --limit 1000 -o diag-broken/

  cnntool diagnose efficientnet_lite0 imagenet-samples --layers _blocks.15._relu1,_relu1 --gradcheck

  torchrun --nproc_per_node 2 -m cnntool diagnose efficientnet_lite0 photos -q > layers.jsonl
""")
@click.argument("model")
@click.argument("data")
@click.option("--layers", metavar="LIST",
              help="Comma-separated layer paths or aliases to measure at their outputs (default: "
                   "every conv/linear layer but the logits, at the activation that follows it).")
@click.option("-o", "--out", metavar="DIR",
              help="Write units.png (dead/constant/saturated units and sparsity per layer) and "
                   "correlation.png (the most correlated layer's units) here.")
@click.option("--limit", type=click.IntRange(1), metavar="N",
              help="Scan N images spread evenly over DATA (every len/N-th), not the first N: a sorted set would show few classes.")
@click.option("--no-correlation", "skip_correlation", is_flag=True,
              help="Skip the correlation between units: it costs C² float64 multiply-adds per "
                   "position (on EfficientNet-Lite0 ~5× the model's own); layers wider than "
                   "4096 units skip it anyway.")
@click.option("--gradcheck", "check_gradients", is_flag=True,
              help="Also check the whole model's gradients against finite differences "
                   "(float64 copy; slow for big models) and add the verdict to the findings.")
@model_options
@data_options
@output_options
def diagnose_command(model, data, layers, out, limit, skip_correlation, check_gradients,
                     model_request, scan):
    """Scan DATA once and report, per layer: dead units (never > 0), units that ignore the
    input (variance ≈ 0), units stuck at a bound (ReLU6/sigmoid/tanh), lifetime and population
    sparsity (Treves–Rolls), the correlation between units (mean |r|, most correlated pairs),
    and per convolution filter a noise score, redundancy (max cosine to another filter) and
    norms. Findings compare them to thresholds shown in each message, with the advice they come
    from and the cnntool command that digs deeper. A table and the findings go to stderr; one
    JSON record per layer (with per-unit lists and its findings), then one for the whole model,
    go to stdout. Memory does not grow with DATA; under torchrun each rank scans a shard and
    rank 0 writes the merged result."""
    from cnntool.cli.followups import Commands, spelled_model
    from cnntool.cli.session import dataset_scan, finish, tidy
    from cnntool.tasks.diagnose import StatsConsumer, default_points, diagnose, merge_states, named_points

    tidy(out, folders=True)
    with dataset_scan(model, model_request, data, scan, limit=limit) as session:
        module = session.module
        names = [n.strip() for n in layers.split(",") if n.strip()] if layers else None
        points = named_points(module, names) if names else default_points(module)
        if not points:
            raise CnnToolError(f"{session.model.name} has no convolution or linear layer before "
                               "its logits; name the layers to measure with --layers")
        stats = StatsConsumer(points, correlation=not skip_correlation)
        session.run([stats], f"diagnose {len(points)} layers")
        parts = session.gather({name: s.state_dict() for name, s in stats.states.items()})
        report = finish(session)
        if not session.is_main:
            return
        loaded = session.model
        gradients = _gradcheck(loaded, module) if check_gradients else None
        diagnosis = diagnose(module, points, merge_states(parts),
                             Commands(spelled_model(model, model_request), data),
                             gradcheck_result=gradients, params_macs=_size(loaded, module))
    write_records([*({"model": loaded.name, **layer.to_record(),
                      "findings": [f.to_record() for f in diagnosis.findings if f.layer == layer.name]}
                     for layer in diagnosis.layers),
                   {"model": loaded.name, "layer": None, "images": diagnosis.images,
                    "layers": len(diagnosis.layers), "unreached": list(diagnosis.unreached),
                    "skipped_images": len(report.skipped),
                    "counts": {s: sum(f.severity == s for f in diagnosis.findings)
                               for s in ("error", "warning", "info")},
                    "findings": [f.to_record() for f in diagnosis.findings if f.layer is None]}],
                  "jsonl")
    _show_table(loaded.name, diagnosis)
    _show_findings(diagnosis)
    if diagnosis.unreached:
        console.warn("never ran in the forward pass (not measured): " + ", ".join(diagnosis.unreached))
    if out:
        _figures(out, loaded.name, diagnosis)


def _gradcheck(loaded, module):
    from cnntool.tasks.gradcheck import gradcheck

    with console.progress("checking gradients", total=None) as advance:
        return gradcheck(module, loaded.input_shape, progress=lambda _result: advance(1))


def _size(loaded, module):
    """(params, MACs per image), or None when the model cannot be counted."""
    from cnntool.tasks.profile import profile

    try:
        counted = profile(module, loaded.input_shape)
    except CnnToolError:
        return None
    return counted.total.params, counted.total.macs


_CAPTION = ("at: the activation measured after the layer (JSON: measured_at); C: units; dead: "
            "never > 0; const: std ≈ 0; sat: at a bound on ≥ 99% of samples; on: mean share of "
            "samples > 0; life/pop: Treves–Rolls lifetime / population sparsity; |r|: mean |r| "
            "between units, maxr: the largest r; noise: median high-frequency share ÷ white "
            "noise's; cos: the largest cosine between two filters")


def _columns():
    def num(key, digits=2):
        return lambda r: "—" if r[key] is None else f"{r[key]:.{digits}f}"

    def count(key):
        return lambda r: "—" if r[key] is None else str(r[key])

    return [Column("layer", "layer", no_wrap=True), Column("at", "at"),
            Column("C", "units", right=True), Column("dead", count("dead"), right=True),
            Column("const", count("constant"), right=True),
            Column("sat", count("saturated"), right=True),
            Column("on", lambda r: "—" if r["active"] is None else f"{r['active']:.0%}", right=True),
            Column("life", num("lifetime_sparsity"), right=True),
            Column("pop", num("population_sparsity"), right=True),
            Column("|r|", num("mean_abs_r"), right=True), Column("maxr", num("max_r", 3), right=True),
            Column("noise", lambda r: r["noise"], right=True),
            Column("cos", num("max_cosine"), right=True)]


def _show_table(name, diagnosis) -> None:
    # compact (no vertical rules, tight padding): 13 columns fit a terminal 80 characters wide
    console.show_table(f"diagnose {name}: {diagnosis.images:,} images", _columns(), diagnosis.rows(),
               caption=_CAPTION, compact=True)


def _show_findings(diagnosis) -> None:
    if not diagnosis.findings:
        console.info("[green]no findings[/]: nothing crossed a threshold")
        return
    console.info(f"{len(diagnosis.findings)} finding(s):")
    from rich.markup import escape

    for finding in diagnosis.findings:
        style = _SEVERITY_STYLE[finding.severity]
        console.info(f"[{style}]{finding.severity}[/] {escape(finding.message)}\n"
                     f"    [dim]advice: \"{escape(finding.advice)}\"[/]\n"
                     f"    [dim]next: {escape(finding.command or '')}[/]")


def _figures(out, name, diagnosis) -> None:
    from pathlib import Path

    from cnntool.io.unit_charts import save_correlation_heatmap, save_unit_bars

    out = Path(out)
    save_unit_bars(out / "units.png", [layer.name for layer in diagnosis.layers],
                   diagnosis.health_series(),
                   title=f"{name}: unit health over {diagnosis.images:,} images")
    written = [out / "units.png"]
    worst = diagnosis.worst_correlated()
    if worst is not None and worst.correlation is not None:
        save_correlation_heatmap(out / "correlation.png", worst.correlation.numpy(),
                                 title=f"{name} {worst.label}: r between units, mean |r| "
                                       f"{worst.mean_abs_r:.2f}")
        written.append(out / "correlation.png")
    console.info("wrote " + ", ".join(str(p) for p in written))
