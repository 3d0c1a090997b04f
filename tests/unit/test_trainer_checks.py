"""What the trainer refuses before training, and how it cuts prompts (pure, no torch)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from trainer.errors import UnsupportedError, UserError
from trainer.hardware import Hardware
from trainer.images import ImageError, check_image
from trainer.llama_cpp import LLAMA_CPP_DIR_ENV, LlamaCppMissingError
from trainer.pipeline import check_model_config
from trainer.preference import fit_orpo_row
from trainer.training import truncate_prompt
from trainer.unsloth import require_unsloth, unsloth_installed
from tuning.spec import TrainingConfig

CPU = Hardware(cuda=False, bf16=False, flash_attention=False)
GPU = Hardware(cuda=True, bf16=True, flash_attention=False, name="NVIDIA L4")
BOS = 2


def config(**changes: Any) -> TrainingConfig:
    return TrainingConfig.model_validate({"base_model_id": "gs://models/base/", **changes})


@pytest.mark.parametrize(
    ("ids", "limit", "kept"),
    [
        ([BOS, 10, 11, 12, 13], 10, [BOS, 10, 11, 12, 13]),
        ([BOS, 10, 11, 12, 13], 3, [BOS, 12, 13]),  # the end of the question, and BOS
        ([10, 11, 12, 13], 2, [12, 13]),
        ([BOS, 10, 11], 1, [11]),
    ],
)
def test_prompts_keep_their_end_and_their_bos_token(
    ids: list[int], limit: int, kept: list[int]
) -> None:
    assert truncate_prompt(ids, limit, BOS) == kept


def test_orpo_rows_cut_the_prompt_first_then_the_answers() -> None:
    prompt = [BOS, 10, 11, 12, 13, 14]
    row = {
        "prompt_input_ids": prompt,
        "prompt_attention_mask": [1] * 6,
        "chosen_input_ids": [*prompt, 20, 21, 22],
        "chosen_attention_mask": [1] * 9,
        "chosen_labels": [-100] * 6 + [20, 21, 22],
        "rejected_input_ids": [*prompt, 30, 31, 32, 33, 34],
        "rejected_attention_mask": [1] * 11,
        "rejected_labels": [-100] * 6 + [30, 31, 32, 33, 34],
    }

    fitted = fit_orpo_row(row, max_prompt_length=3, max_length=6, bos_token_id=BOS)

    assert fitted["prompt_input_ids"] == [BOS, 13, 14]
    assert fitted["chosen_input_ids"] == [BOS, 13, 14, 20, 21, 22]
    assert fitted["chosen_labels"] == [-100, -100, -100, 20, 21, 22]
    assert fitted["rejected_input_ids"] == [BOS, 13, 14, 30, 31, 32]  # the answer cut last
    assert fitted["rejected_attention_mask"] == [1] * 6


def test_unsloth_is_refused_without_cuda_with_the_fix_in_the_message() -> None:
    with pytest.raises(UserError) as raised:
        require_unsloth(CPU)

    assert raised.value.error_type.value == "user"
    assert raised.value.message.startswith(
        "provider 'unsloth' needs a CUDA GPU with unsloth installed; use provider 'huggingface'"
    )


def test_unsloth_is_refused_on_a_gpu_without_the_package() -> None:
    if unsloth_installed():
        pytest.skip("unsloth is installed here")
    with pytest.raises(UserError, match="unsloth is not installed"):
        require_unsloth(GPU)


def test_a_vision_job_needs_a_model_with_a_vision_tower() -> None:
    vision = config(modality="vision")
    text_model = {"model_type": "gemma3_text", "hidden_size": 640}

    with pytest.raises(UserError) as raised:
        check_model_config(vision, text_model)

    assert raised.value.message.startswith("base_model_id: gs://models/base/ is a text-only")
    check_model_config(vision, {"model_type": "gemma3", "vision_config": {"hidden_size": 1152}})
    with pytest.raises(UnsupportedError, match="'llava'"):
        check_model_config(vision, {"model_type": "llava", "vision_config": {"hidden_size": 8}})
    check_model_config(config(), text_model)


def test_gguf_is_refused_from_the_config_for_models_llama_cpp_would_misread() -> None:
    from trainer.llama_cpp import GgufIncompatibleModelError

    gguf = config(export_config={"include_gguf": True})
    gemma3 = {
        "model_type": "gemma3_text",
        "num_hidden_layers": 2,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "sliding_window": 64,
        "layer_types": ["sliding_attention", "sliding_attention"],
    }

    check_model_config(gguf, gemma3)
    with pytest.raises(UnsupportedError, match="include_gguf: GGUF export supports"):
        check_model_config(gguf, {"model_type": "llama"})
    with pytest.raises(GgufIncompatibleModelError, match="layer_types") as raised:
        check_model_config(gguf, {**gemma3, "layer_types": ["sliding_attention", "full_attention"]})
    # The request must change, so it is the user's to fix, and the message says how.
    assert raised.value.error_type.value == "user"
    assert raised.value.message.startswith("export_config.include_gguf: llama.cpp would not run")
    assert "set export_config.include_gguf to false" in raised.value.message


def test_gguf_of_a_vision_model_and_without_llama_cpp_are_system_errors(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.export import prepare_gguf_export

    gguf = {"format": "merged", "include_gguf": True, "gguf_quantization": "q8_0"}
    monkeypatch.setenv(LLAMA_CPP_DIR_ENV, str(tmp_path))

    assert prepare_gguf_export(config()) is None
    with pytest.raises(UnsupportedError, match="include_gguf: GGUF export of vision models"):
        prepare_gguf_export(config(modality="vision", export_config=gguf))
    with pytest.raises(LlamaCppMissingError, match=LLAMA_CPP_DIR_ENV) as raised:
        prepare_gguf_export(config(export_config=gguf))
    assert raised.value.error_type.value == "system"


def image_bytes(size: tuple[int, int] = (8, 6), image_format: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, format=image_format)
    return buffer.getvalue()


def test_images_must_decode_fully() -> None:
    good = image_bytes()

    assert check_image(good) == (8, 6)
    assert check_image(image_bytes(image_format="JPEG")) == (8, 6)
    with pytest.raises(ImageError, match="not a readable image"):
        check_image(b"definitely not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        check_image(image_bytes((64, 64))[:-40])  # truncated
