"""What `cnntool gradcheck` writes: one record per tensor (CSV: flat shapes), the table for
people, and the sentences that sum a check up."""

from __future__ import annotations

from collections.abc import Callable

from cnntool.io.records import Column, styled, write_records

CSV_COLUMNS = [
    "module",
    "tensor",
    "shape",
    "verdict",
    "checks",
    "passed",
    "failed",
    "inconclusive",
    "kinks",
    "max_rel_err",
    "max_abs_err",
    "mode",
    "eps",
    "rtol",
    "atol",
]
VERDICT_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}


def _err(value: float | None) -> str:
    return "—" if value is None else f"{value:.1e}"


TABLE = [
    Column("module", lambda t: t.module or "(model)"),
    Column("tensor", lambda t: t.name),
    Column("shape", lambda t: "×".join(map(str, t.shape))),
    Column("checks", lambda t: len(t.checks), right=True),
    Column("incon.", lambda t: t.count("inconclusive"), right=True),
    Column("rel err", lambda t: _err(t.max_rel_err), right=True),
    Column("abs err", lambda t: _err(t.max_abs_err), right=True),
    Column("verdict", lambda t: styled(t.verdict.upper(), VERDICT_STYLE[t.verdict]), right=True),
]


def plan(loaded, batch: int, per_layer: bool, seed: int) -> str:
    """What is checked, where and on what input (`loaded`: a core.loading.models.LoadedModel)."""
    what = "every module alone" if per_layer else "the whole model"
    return (
        f"{loaded.name}: checking {what} on a float64 copy on {loaded.device} (the model "
        f"itself is unchanged), input {batch}×{'×'.join(map(str, loaded.input_shape))}, seed {seed}"
    )


def write(result, name: str, fmt: str, *, show: Callable) -> None:
    """One record per tensor on stdout (CSV: shapes as 3x32x32), or with `table` the table;
    otherwise the table goes to `show(title, columns, rows, caption=…)` (stderr)."""
    table = dict(
        title=f"gradcheck {name} ({result.mode})",
        caption=f"loss: {result.loss}; {result.tolerances.describe()}; errors: the "
        "largest over a tensor's conclusive checks",
    )
    if fmt == "table":
        write_records(result.tensors, "table", table_columns=TABLE, **table)
        return
    show(table["title"], TABLE, result.tensors, caption=table["caption"])
    records = result.to_records()
    if fmt == "csv":
        records = [{**r, "shape": "x".join(map(str, r["shape"]))} for r in records]
    write_records(records, fmt, columns=CSV_COLUMNS if fmt == "csv" else None)


def messages(result) -> list[tuple[str, str]]:
    """(level, sentence) for people, level being warn, info or error: the warnings, the modules
    not checked (the first five), the verdict counts, and the wrong gradients, worst first."""
    found = [("warn", warning) for warning in result.warnings]
    if result.skipped:
        more = len(result.skipped) - 5
        found.append(
            (
                "warn",
                "not checked: "
                + "; ".join(f"{s.path} ({s.reason})" for s in result.skipped[:5])
                + (f"; and {more} more" if more > 0 else ""),
            )
        )
    counts = {v: sum(t.verdict == v for t in result.tensors) for v in VERDICT_STYLE}
    found.append(
        (
            "info",
            f"{len(result.tensors)} tensors: {counts['pass']} pass, "
            f"{counts['inconclusive']} inconclusive, {counts['fail']} fail",
        )
    )
    if result.failures:
        worst = sorted(result.failures, key=lambda t: -t.max_rel_err)
        found.append(
            (
                "error",
                "wrong gradients: "
                + ", ".join(f"{t.path} (rel err {t.max_rel_err:.1e})" for t in worst[:8])
                + (f" and {len(worst) - 8} more" if len(worst) > 8 else ""),
            )
        )
    return found
