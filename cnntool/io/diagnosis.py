"""What `cnntool diagnose` writes: one JSON record per layer (with its findings) and one for the
whole model, the table for people, the findings as rich text for stderr, and the
figures (units.png, correlation.png)."""

from __future__ import annotations

from pathlib import Path

from cnntool.io.records import Column, table
from cnntool.io.untrusted import printable

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
CAPTION = (
    "at: the activation measured after the layer (JSON: measured_at); C: units; dead: "
    "never > 0; const: std ≈ 0; sat: at a bound on ≥ 99% of samples; on: mean share of "
    "samples > 0; life/pop: Treves–Rolls lifetime / population sparsity; |r|: mean |r| "
    "between units, maxr: the largest r; noise: median high-frequency share ÷ white "
    "noise's; cos: the largest cosine between two filters"
)


def records(model: str, diagnosis, skipped: int) -> list[dict]:
    """One record per layer, then one for the whole model (`layer`: None) with its findings."""
    return [
        *(
            {
                "model": model,
                **layer.to_record(),
                "findings": [f.to_record() for f in diagnosis.findings if f.layer == layer.name],
            }
            for layer in diagnosis.layers
        ),
        {
            "model": model,
            "layer": None,
            "images": diagnosis.images,
            "layers": len(diagnosis.layers),
            "unreached": list(diagnosis.unreached),
            "skipped_images": skipped,
            "counts": {
                s: sum(f.severity == s for f in diagnosis.findings)
                for s in ("error", "warning", "info")
            },
            "findings": [f.to_record() for f in diagnosis.findings if f.layer is None],
        },
    ]


def columns() -> list[Column]:
    """The table's columns over `Diagnosis.rows()` (13: compact, they fit 80 characters)."""

    def num(key, digits=2):
        return lambda r: "—" if r[key] is None else f"{r[key]:.{digits}f}"

    def count(key):
        return lambda r: "—" if r[key] is None else str(r[key])

    return [
        Column("layer", "layer", no_wrap=True),
        Column("at", "at"),
        Column("C", "units", right=True),
        Column("dead", count("dead"), right=True),
        Column("const", count("constant"), right=True),
        Column("sat", count("saturated"), right=True),
        Column("on", lambda r: "—" if r["active"] is None else f"{r['active']:.0%}", right=True),
        Column("life", num("lifetime_sparsity"), right=True),
        Column("pop", num("population_sparsity"), right=True),
        Column("|r|", num("mean_abs_r"), right=True),
        Column("maxr", num("max_r", 3), right=True),
        Column("noise", lambda r: r["noise"], right=True),
        Column("cos", num("max_cosine"), right=True),
    ]


def diagnosis_table(model: str, diagnosis):
    """The table for people: a row per layer; compact (no vertical rules, tight padding), so
    that its 13 columns fit a terminal 80 characters wide."""
    return table(
        f"diagnose {model}: {diagnosis.images:,} images",
        columns(),
        diagnosis.rows(),
        caption=CAPTION,
        compact=True,
    )


def findings_text(diagnosis) -> list:
    """The findings as rich Texts, one message each (with its advice and next command): our
    styles, the messages (which name layers) as plain text."""
    from rich.text import Text

    if not diagnosis.findings:
        return [Text.assemble(("no findings", "green"), ": nothing crossed a threshold")]
    return [
        Text(f"{len(diagnosis.findings)} finding(s):"),
        *(
            Text.assemble(
                (f.severity, SEVERITY_STYLE[f.severity]),
                " ",
                printable(f.message),
                ('\n    advice: "' + printable(f.advice) + '"', "dim"),
                ("\n    next: " + printable(f.command) if f.command else "", "dim"),
            )
            for f in diagnosis.findings
        ),
    ]


def save_figures(out, name: str, diagnosis) -> list[Path]:
    """units.png, and correlation.png of the most correlated layer (when one has r); the paths."""
    from cnntool.io.unit_charts import save_correlation_heatmap, save_unit_bars

    out = Path(out)
    save_unit_bars(
        out / "units.png",
        [layer.name for layer in diagnosis.layers],
        diagnosis.health_series(),
        title=f"{name}: unit health over {diagnosis.images:,} images",
    )
    written = [out / "units.png"]
    worst = diagnosis.worst_correlated()
    if worst is not None and worst.correlation is not None:
        save_correlation_heatmap(
            out / "correlation.png",
            worst.correlation.numpy(),
            title=f"{name} {worst.label}: r between units, mean |r| {worst.mean_abs_r:.2f}",
        )
        written.append(out / "correlation.png")
    return written
