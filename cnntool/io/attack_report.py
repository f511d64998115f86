"""What `cnntool attack` reports: its record columns, the per-image table, the ε-sweep table and
plot, and the sentences that sum an attack up (the files are io.adversarial's)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from cnntool.io.adversarial import class_label
from cnntool.io.figures import eps_label, save_accuracy_plot
from cnntool.io.records import Column, RecordWriter, percent, write_records

RECORD_COLUMNS = [
    "path",
    "eps",
    "label",
    "label_source",
    "target",
    "clean_pred",
    "clean_name",
    "clean_conf",
    "adv_pred",
    "adv_name",
    "adv_conf",
    "success",
    "linf",
    "l2",
    "file",
    "success_after_save",
    "full_res_file",
    "full_res_pred",
    "success_full_res",
    "upscaled_from",
]
SWEEP_COLUMNS = [
    "model",
    "attack",
    "norm",
    "eps",
    "images",
    "labels_from_dataset",
    "clean_accuracy",
    "adv_accuracy",
    "success_rate",
]
IMAGE_TABLE = [
    Column("path", lambda r: Path(r["path"]).name, fold=True),
    Column("label", "label", fold=True),
    Column(
        "clean",
        lambda r: f"{class_label(r['clean_name'], r['clean_pred'])} {percent(r['clean_conf'])}",
        fold=True,
    ),
    Column(
        "adversarial",
        lambda r: f"{class_label(r['adv_name'], r['adv_pred'])} {percent(r['adv_conf'])}",
        fold=True,
    ),
    Column("success", lambda r: "✓" if r["success"] else "✗"),
    Column("linf", lambda r: f"{r['linf']:.4f}"),
]
SWEEP_TABLE = [
    Column("ε", lambda r: eps_label(r["eps"]), right=True),
    Column("accuracy", lambda r: percent(r["adv_accuracy"]), right=True),
    Column("success rate", lambda r: percent(r["success_rate"]), right=True),
]


class ImageRecords:
    """A single-ε attack's records, one per image: in one process written to stdout as they
    come (JSON Lines or CSV); for a table, or under torchrun for rank 0, kept to write at the
    end."""

    def __init__(
        self,
        fmt: str,
        streaming: bool,
        columns: Sequence[str] = RECORD_COLUMNS,
        table: Sequence[Column] = IMAGE_TABLE,
    ):
        self.fmt, self.columns, self.table = fmt, columns, table
        self.writer = (
            RecordWriter(sys.stdout, fmt, columns) if fmt != "table" and streaming else None
        )

    def add(self, outcome, fields: dict) -> dict | None:
        """Write an AttackedImage's record (its own fields and `fields`), or return it to keep."""
        record = {**outcome.to_record(), **fields}
        if self.writer is None:
            return record
        self.writer.write(record)
        return None

    def finish(self, kept: Sequence[dict]) -> None:
        """Write the kept records (every rank's, in dataset order) unless they went out already."""
        if self.writer is None:
            write_records(kept, self.fmt, columns=self.columns, table_columns=self.table)


def write_sweep(
    method: str,
    norm: str,
    model_name: str,
    data_name: str,
    summaries,
    fmt: str,
    out: str | Path | None,
    *,
    show: Callable,
    info: Callable[[str], None],
    scale: int = 1,
) -> None:
    """An ε sweep's records (SWEEP_COLUMNS), one per ε, on stdout, or with `table` its table;
    otherwise the table goes to `show(title, columns, records)` (stderr). With `out`, accuracy
    (%) against ε plotted in OUT/sweep.png from the clean accuracy at ε = 0 (figures.
    save_accuracy_plot), said with `info`."""
    records = [
        {"model": model_name, "attack": method, "norm": norm, **s.to_record()} for s in summaries
    ]
    clean = summaries[0].clean_accuracy
    title = (
        f"{method} on {model_name}, {data_name} (clean accuracy {percent(clean)}; "
        f"{summaries[0].label_sources()})"
    )
    write_records(records, fmt, columns=SWEEP_COLUMNS, title=title, table_columns=SWEEP_TABLE)
    if fmt != "table":
        show(title, SWEEP_TABLE, records)
    if out is not None:
        plot = Path(out) / "sweep.png"
        save_accuracy_plot(
            plot,
            {model_name: ([s.eps for s in summaries], [s.adv_accuracy for s in summaries])},
            title=sweep_title(method, model_name, data_name, summaries[0].images),
            norm=norm,
            clean=clean,
            scale=scale,
        )
        info(f"accuracy against ε plotted in {plot}")


def sweep_title(method: str, model_name: str, data_name: str, images: int) -> str:
    """The sweep plot's title: method, model and data (user strings: figures draws them
    literally, through io.untrusted.plot_text)."""
    return f"{method.upper()} on {model_name}, {data_name} ({images:,} images)"


def summary_lines(
    summary,
    method: str,
    norm: str,
    targeted: bool,
    files=None,
    counts: Sequence[dict] = (),
    full_res: bool = False,
) -> list[str]:
    """A single-ε attack summed up: accuracy before and after and the success rate; with
    `files` (io.adversarial.AdversarialFiles; `counts`: each rank's `counts()`), where they
    went and how many full-resolution photos still fool the model."""
    eps_text = None if summary.eps is None else eps_label(summary.eps)  # None: cw, deepfool
    lines = [summary.describe(method, norm, targeted, eps_text)]
    if files is None:
        return lines
    lines.append(
        f"adversarial PNGs in {files.folder}"
        + (f", triptychs in {files.triptych_folder}" if any(c["triptychs"] for c in counts) else "")
    )
    if full_res:
        lines.append(
            f"full resolution ({files.full_res_folder}): "
            f"{sum(c['full_res_successes'] for c in counts)} of "
            f"{sum(c['full_res'] for c in counts)} still succeed after the model's "
            "resize and crop"
        )
    return lines
