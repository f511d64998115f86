"""`cnntool profile` and `cnntool layers` against stored outputs, as torchinfo tests its
summaries: the table and the CSV of three models, compared character for character.

The files are tests/golden/{profile,layers}-MODEL.{txt,csv}. After a deliberate change of the
output, regenerate them and review their diff before committing it:

    CNNTOOL_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

The commands run in this process (click's runner) with 120 columns and no colour; one case
also runs through a real pipe to show that both give the same bytes. The models have random
weights (torchvision's alexnet and resnet18): counting does not depend on them.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("CNNTOOL_REGENERATE_GOLDEN") == "1"
WIDTH = {"COLUMNS": "120", "NO_COLOR": "1"}
MODELS = ["lenet5-mnist", "alexnet", "resnet18"]
CASES = [
    (command, model, fmt)
    for command in ("profile", "layers")
    for model in MODELS
    for fmt in ("table", "csv")
]


def golden_path(command: str, model: str, fmt: str) -> Path:
    return GOLDEN / f"{command}-{model}.{'txt' if fmt == 'table' else 'csv'}"


def output(command: str, model: str, fmt: str) -> str:
    """What `cnntool COMMAND MODEL --format FMT` prints on stdout."""
    from cnntool.cli.main import cli

    result = CliRunner().invoke(cli, [command, model, "--format", fmt], env=WIDTH)
    assert result.exit_code == 0, result.output
    return result.stdout


def compare(text: str, path: Path) -> None:
    if REGENERATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="")
    assert path.exists(), f"{path} is missing: run with CNNTOOL_REGENERATE_GOLDEN=1 to write it"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"the output differs from {path} (regenerate it if that is intended)"


@pytest.mark.parametrize("command, model, fmt", CASES, ids=["-".join(case) for case in CASES])
def test_output_equals_the_golden_file(command, model, fmt):
    compare(output(command, model, fmt), golden_path(command, model, fmt))


def test_a_real_pipe_prints_the_same_bytes(cnntool):
    piped = cnntool("profile", "lenet5-mnist", "--format", "table", "-q")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == golden_path("profile", "lenet5-mnist", "table").read_text(
        encoding="utf-8"
    )


@pytest.mark.parametrize("model", MODELS)
def test_profile_csv_rows_add_up_to_the_total_row(model):
    """Each row holds the work a layer did itself (its own ops, and functional ops it calls
    directly), never its children's, so the rows of MACs, FLOPs and activation memory add up
    to the total row; parameters do too, as no model here shares a weight between modules."""
    rows = list(csv.DictReader(io.StringIO(golden_path("profile", model, "csv").read_text())))
    *layers, total = rows
    assert total["name"] == "total" and "total" not in {row["name"] for row in layers}
    for column in ("params", "macs", "flops", "activation_bytes"):
        assert sum(int(row[column]) for row in layers) == int(total[column]), column
