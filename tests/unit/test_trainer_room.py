"""The trainer refuses, before training, a job whose checkpoint and export cannot fit on the
task's own disk (its memory on Cloud Run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.errors import InsufficientSpaceError
from trainer.room import ensure_room_for_outputs, local_output_bytes
from tuning.estimates import ModelShape
from tuning.model_catalog import catalog_config
from tuning.spec import parse_train_request

GIB = 2**30


def config(method: str = "LoRA", **export: object):
    data = {
        "processed_dataset_id": "ds",
        "training_config": {
            "base_model_id": "google/gemma-3-12b-it",
            "method": method,
            "export_config": {"format": "adapter", **export},
        },
    }
    return parse_train_request(data).training_config


def model_folder(tmp_path: Path, model: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(catalog_config(model)))
    return folder


def test_an_adapter_export_writes_next_to_nothing_and_a_merged_one_its_16_bit_weights():
    parameters = ModelShape.from_config(catalog_config("google/gemma-3-12b-it")).parameters

    assert local_output_bytes(config(), parameters) == 0
    assert local_output_bytes(config(format="merged"), parameters) == 2 * parameters
    with_gguf = config(format="merged", include_gguf=True, gguf_quantization=["q8_0", "q4_k_m"])
    assert local_output_bytes(with_gguf, parameters) == (2 + 2 + 2) * parameters
    # Full: its weights, and a checkpoint of float32 weights with AdamW's two moments.
    assert local_output_bytes(config("Full"), parameters) == (2 + 12) * parameters


def test_a_merged_12b_export_that_cannot_fit_fails_before_training_naming_the_fix(tmp_path):
    folder = model_folder(tmp_path, "google/gemma-3-12b-it")

    with pytest.raises(InsufficientSpaceError) as raised:
        ensure_room_for_outputs(
            config(format="merged"), folder, tmp_path / "work", free_bytes=lambda _: 20 * GIB
        )

    assert "checkpoint and export" in raised.value.message
    assert "trainer_gpu.memory" in raised.value.message  # where the operator gives it more


def test_what_fits_passes_and_an_unreadable_config_is_left_to_the_model_checks(tmp_path):
    folder = model_folder(tmp_path, "google/gemma-3-12b-it")
    ensure_room_for_outputs(
        config(format="merged"), folder, tmp_path / "work", free_bytes=lambda _: 30 * GIB
    )
    (folder / "config.json").write_text("{}")
    ensure_room_for_outputs(config("Full"), folder, tmp_path / "work", free_bytes=lambda _: 0)
