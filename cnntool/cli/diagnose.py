"""`cnntool diagnose MODEL DATA`: the "my network does not work — where do I look?" checklist.

Thin: parse -> core (model, data, shards) -> tasks.diagnose (scan, merge, findings) -> io.
torch is imported inside the function so that `--help` stays instant.
"""
from __future__ import annotations

import shlex
import sys

import click

from cnntool.cli import console
from cnntool.cli.options import data_options, load_cli_model, model_options, output_options
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
@click.option("--limit", type=click.IntRange(1), metavar="N", help="Scan only the first N images.")
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
def diagnose_command(model, data, layers, out, limit, skip_correlation, check_gradients, arch,
                     weights, trust_code, device, batch_size, workers):
    """Scan DATA once and report, per layer: dead units (never > 0), units that ignore the
    input (variance ≈ 0), units stuck at a bound (ReLU6/sigmoid/tanh), lifetime and population
    sparsity (Treves–Rolls), the correlation between units (mean |r|, most correlated pairs),
    and per convolution filter a noise score, redundancy (max cosine to another filter) and
    norms. Findings compare them to thresholds shown in each message, with the advice they come
    from and the cnntool command that digs deeper. A table and the findings go to stderr; one
    JSON record per layer (with per-unit lists and its findings), then one for the whole model,
    go to stdout. Memory does not grow with DATA; under torchrun each rank scans a shard and
    rank 0 writes the merged result."""
    from cnntool.core.data import open_data
    from cnntool.core.sharding import distributed, gather, merged_skipped, shard_stream
    from cnntool.tasks.diagnose import default_points, named_points, scan

    loaded = load_cli_model(model, arch=arch, weights=weights, device=device, trust_code=trust_code)
    with distributed(loaded.device) as shard:
        if not shard.is_main:
            console.set_quiet(True)
        module = loaded.module.to(shard.device)
        names = [n.strip() for n in layers.split(",") if n.strip()] if layers else None
        points = named_points(module, names) if names else default_points(module)
        if not points:
            raise CnnToolError(f"{loaded.name} has no convolution or linear layer before its "
                               "logits; name the layers to measure with --layers")
        dataset = open_data(data).head(limit)
        stream = shard_stream(dataset, loaded.preprocessing, shard, batch_size=batch_size,
                              workers=workers)
        with console.progress(f"diagnose {len(points)} layers", total=stream.total) as advance:
            states = scan(module, points, stream, device=shard.device,
                          correlation=not skip_correlation,
                          on_batch=lambda batch: advance(len(batch.indices)))
        parts = gather({name: s.state_dict() for name, s in states.items()}, shard)
        skipped = merged_skipped(stream.skipped, shard)
        if shard.is_main:
            _finish(loaded, module, points, parts, skipped, dataset, data, out, check_gradients,
                    _spelled_model(model, arch, weights, trust_code))


def _spelled_model(model, arch, weights, trust_code) -> str:
    """The MODEL argument and its loading flags, as follow-up commands must repeat them."""
    words = [shlex.quote(model)]
    if arch:
        words += ["--arch", shlex.quote(arch)]
    if weights:
        words += ["--weights", shlex.quote(weights)]
    if trust_code:
        words.append("--trust-code")
    return " ".join(words)


def _finish(loaded, module, points, parts, skipped, dataset, data, out, check_gradients,
            spelled_model) -> None:
    """Rank 0: merge, judge, report on stderr, records on stdout, figures in OUT."""
    from cnntool.errors import DataError
    from cnntool.io.writers import RecordWriter
    from cnntool.tasks.diagnose import Commands, diagnose, merge_states

    merged = merge_states(parts)
    if not any(s.samples for s in merged.values()):
        raise DataError(f"none of the {len(dataset)} images in {dataset.name} could be read")
    commands = Commands(spelled_model, data)
    gradients = _gradcheck(loaded, module) if check_gradients else None
    diagnosis = diagnose(module, points, merged, commands, gradcheck_result=gradients,
                         params_macs=_size(loaded, module))
    writer = RecordWriter(sys.stdout, "jsonl")
    for layer in diagnosis.layers:
        own = [f.to_record() for f in diagnosis.findings if f.layer == layer.name]
        writer.write({"model": loaded.name, **layer.to_record(), "findings": own})
    writer.write({"model": loaded.name, "layer": None, "images": diagnosis.images,
                  "layers": len(diagnosis.layers), "unreached": list(diagnosis.unreached),
                  "skipped_images": len(skipped),
                  "counts": {s: sum(f.severity == s for f in diagnosis.findings)
                             for s in ("error", "warning", "info")},
                  "findings": [f.to_record() for f in diagnosis.findings if f.layer is None]})
    console.show(_table(loaded.name, diagnosis))
    _show_findings(diagnosis)
    if diagnosis.unreached:
        console.warn("never ran in the forward pass (not measured): " + ", ".join(diagnosis.unreached))
    if out:
        _figures(out, loaded.name, diagnosis)
    if skipped:
        console.warn(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0][0]}")


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


def _table(name, diagnosis):
    from rich import box
    from rich.table import Table

    # no vertical rules and tight padding: 13 columns fit a terminal 80 characters wide
    table = Table(title=f"diagnose {name}: {diagnosis.images:,} images", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True,
                  caption="at: the activation measured after the layer (JSON: measured_at); "
                          "C: units; dead: never > 0; const: std ≈ 0; sat: at a bound on ≥ 99% of "
                          "samples; on: mean share of samples > 0; life/pop: Treves–Rolls lifetime / "
                          "population sparsity; |r|: mean |r| between units, maxr: the largest r; "
                          "noise: median high-frequency share ÷ white noise's; cos: the largest "
                          "cosine between two filters", caption_justify="left")
    table.add_column("layer", no_wrap=True)
    for column in ("at", "C", "dead", "const", "sat", "on", "life", "pop", "|r|", "maxr",
                   "noise", "cos"):
        table.add_column(column, justify="left" if column == "at" else "right")
    for layer in diagnosis.layers:
        point, f = layer.point, layer.filters
        table.add_row(
            point.layer or point.module, point.activation.kind, str(layer.units),
            _count(layer.dead), _count(layer.constant), _count(layer.saturated),
            _pct(layer.mean_active), _num(layer.mean_lifetime_sparsity),
            _num(layer.population_sparsity), _num(layer.mean_abs_r),
            _num(layer.top_pairs[0][2] if layer.top_pairs else None, 3), _ratio(f),
            _num(max(f.redundancy) if f and f.redundancy else None))
    return table


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
    layers = diagnosis.layers
    series = {
        "dead": [layer.share(layer.dead) for layer in layers],
        "constant": [layer.share(layer.constant) for layer in layers],
        "saturated": [layer.share(layer.saturated) for layer in layers],
        "sparsity (≤ 0)": [None if layer.dead is None else 1 - layer.mean_active for layer in layers],
    }
    save_unit_bars(out / "units.png", [layer.name for layer in layers], series,
                   title=f"{name}: unit health over {diagnosis.images:,} images")
    written = [out / "units.png"]
    worst = diagnosis.worst_correlated()
    if worst is not None and worst.correlation is not None:
        save_correlation_heatmap(out / "correlation.png", worst.correlation.numpy(),
                                 title=f"{name} {worst.label}: r between units, mean |r| "
                                       f"{worst.mean_abs_r:.2f}")
        written.append(out / "correlation.png")
    console.info("wrote " + ", ".join(str(p) for p in written))


def _count(units) -> str:
    return "—" if units is None else str(len(units))


def _pct(value) -> str:
    return "—" if value is None else f"{value:.0%}"


def _num(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ratio(report) -> str:
    if report is None or report.median_noise is None or not report.white_noise_score:
        return "—" if report is None else "n/a"
    return f"{report.median_noise / report.white_noise_score:.2f}"
