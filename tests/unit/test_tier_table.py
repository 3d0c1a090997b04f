"""The tier tables in README.md and docs/deploy.md are the ones tuning/tier_table.py makes
from the placement submit runs, and the cells say what placement does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuning.errors import InvalidRequestError
from tuning.placement import place_job
from tuning.spec import parse_train_request
from tuning.tier_table import (
    ESTIMATE_TABLE_MARKER,
    REFERENCE_TIERS,
    TIER_TABLE_MARKER,
    Cell,
    cell,
    estimate_table,
    main,
    tier_table,
)

ROOT = Path(__file__).resolve().parents[2]
WITHOUT_VERTEX = tuple(tier for tier in REFERENCE_TIERS if tier.gpu_count == 1)


def table_under(marker: str, text: str) -> str:
    """The Markdown table right under `marker` in `text` (every line up to the first that is
    not a table row)."""
    assert text.count(marker) == 1, f"{marker} should be in the file once"
    lines = text.split(marker, 1)[1].lstrip("\n").splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append(line)
    return "\n".join(rows)


@pytest.mark.parametrize(
    ("document", "marker", "generate"),
    [
        ("README.md", ESTIMATE_TABLE_MARKER, estimate_table),
        ("README.md", TIER_TABLE_MARKER, tier_table),
        ("docs/deploy.md", TIER_TABLE_MARKER, tier_table),
    ],
)
def test_the_documented_table_is_the_generated_one(document: str, marker: str, generate) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")

    assert table_under(marker, text) == generate(), (
        f"{document} is out of date: paste the output of `python -m tuning.tier_table`"
    )


def test_a_stale_or_extended_table_is_caught() -> None:
    table = tier_table()
    page = f"{TIER_TABLE_MARKER}\n{table}\n| gemma-9-1t | none | none | none |\n\nprose\n"

    assert table_under(TIER_TABLE_MARKER, page) != table


def test_each_size_and_method_goes_where_placement_puts_it() -> None:
    assert cell("gemma-3-270m", "QLoRA") == Cell("l4", pytest.approx(2.1, abs=0.05), "l4")
    assert cell("gemma-3-12b", "LoRA").tier == "rtx-pro-6000"
    full_27b = cell("gemma-3-27b", "Full")
    assert full_27b.tier == "h100x8" and full_27b.describe() == "h100x8, 58.8"
    # One GPU only: QLoRA stays off the 8-GPU tier even when it would fit there.
    assert cell("gemma-3-27b", "QLoRA").tier == "l4"


def test_without_a_tier_that_holds_it_the_cell_says_none_with_the_estimate() -> None:
    refused = cell("gemma-3-27b", "Full", WITHOUT_VERTEX)

    assert refused.tier is None and refused.estimated_on == "rtx-pro-6000"
    assert refused.describe() == "none (486.4 on rtx-pro-6000)"
    # ... as submit refuses it.
    request = {
        "processed_dataset_id": "ds",
        "training_config": {"base_model_id": "google/gemma-3-27b-it", "method": "Full"},
    }
    config = parse_train_request(request).training_config
    with pytest.raises(InvalidRequestError, match=r"486\.4 GiB"):
        place_job(config, tiers=WITHOUT_VERTEX, storage=None)
    assert "none (" in tier_table(tiers=WITHOUT_VERTEX)


def test_a_longer_qlora_job_moves_to_the_larger_one_gpu_tier_not_to_eight() -> None:
    request = {
        "processed_dataset_id": "ds",
        "training_config": {
            "base_model_id": "google/gemma-3-27b-it",
            "method": "QLoRA",
            "hyperparameters": {"max_seq_length": 2048},
        },
    }
    config = parse_train_request(request).training_config

    assert place_job(config, tiers=REFERENCE_TIERS, storage=None).tier == "rtx-pro-6000"


def test_the_command_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    printed = capsys.readouterr().out

    assert table_under(ESTIMATE_TABLE_MARKER, printed) == estimate_table()
    assert table_under(TIER_TABLE_MARKER, printed) == tier_table()
