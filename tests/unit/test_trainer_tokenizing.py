"""Large datasets are tokenized by several processes; small ones by the trainer's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.training import ROWS_PER_TOKENIZING_PROCESS, tokenizing_processes


@pytest.mark.parametrize(
    ("rows", "cpus", "expected"),
    [
        (100, 8, None),  # a worker's start-up would cost more than it tokenizes
        (ROWS_PER_TOKENIZING_PROCESS * 2, 8, 2),
        (1_000_000, 8, 8),  # never more processes than cores
        (1_000_000, 1, None),
    ],
)
def test_tokenizing_processes_follow_rows_and_cores(
    rows: int, cpus: int, expected: int | None
) -> None:
    assert tokenizing_processes(rows, cpus) == expected


def test_the_sft_and_preference_configs_carry_the_process_count(tmp_path: Path) -> None:
    from tests.trainer.test_training_defaults import config_of, run_of, with_rows
    from trainer.preference import dpo_config
    from trainer.sft import sft_config
    from tuning.dataset.rows import RowFormat

    rows = [{"prompt": "p", "completion": "c"}] * (ROWS_PER_TOKENIZING_PROCESS * 64)
    sft = with_rows(
        run_of(config_of("sft", "LoRA"), tmp_path, tmp_path), rows, RowFormat.PROMPT_COMPLETION
    )
    dpo = with_rows(
        run_of(config_of("dpo", "LoRA"), tmp_path, tmp_path), rows, RowFormat.PROMPT_COMPLETION
    )
    expected = tokenizing_processes(len(rows))

    assert (
        sft_config(sft, assistant_only_loss=False, gradient_checkpointing=False).dataset_num_proc
        == expected
    )
    assert dpo_config(dpo, gradient_checkpointing=False).dataset_num_proc == expected
