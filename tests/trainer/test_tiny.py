"""The tiny Gemma builder: a real sentencepiece tokenizer, Gemma tokens and chat template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainer.harness import png


@pytest.mark.parametrize("fixture", ["tiny_gemma3", "tiny_gemma2"])
def test_snapshot_looks_like_a_hub_gemma(fixture: str, request: pytest.FixtureRequest) -> None:
    import sentencepiece as spm
    from transformers import AutoConfig, AutoTokenizer

    snapshot: Path = request.getfixturevalue(fixture)
    tokenizer = AutoTokenizer.from_pretrained(snapshot)
    config = AutoConfig.from_pretrained(snapshot)
    text = "What colour is ember? 42\tteal!"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        tokenize=False,
    )
    decoder = json.loads((snapshot / "tokenizer_config.json").read_text())["added_tokens_decoder"]

    assert {"model.safetensors", "tokenizer.model", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in snapshot.iterdir()
    }
    assert (config.hidden_size, config.num_hidden_layers) == (64, 2)
    assert config.model_type == ("gemma3_text" if fixture == "tiny_gemma3" else "gemma2")
    processor = spm.SentencePieceProcessor(model_file=str(snapshot / "tokenizer.model"))
    assert tokenizer(text, add_special_tokens=False).input_ids == processor.encode(text)
    assert tokenizer(text).input_ids[0] == tokenizer.bos_token_id == 2
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)
    assert (
        rendered
        == "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nhello<end_of_turn>\n"
    )
    assert decoder[str(tokenizer.convert_tokens_to_ids("<end_of_turn>"))]["special"] is True


def test_command_builds_a_snapshot(tmp_path: Path) -> None:
    from trainer.tiny import main

    assert main(["--out", str(tmp_path / "m"), "--family", "gemma2"]) == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "gemma2"


def test_vision_snapshot_has_a_siglip_tower_and_a_torchvision_free_processor(
    tiny_gemma3_vision: Path,
) -> None:
    import io

    from PIL import Image
    from transformers import AutoConfig, AutoProcessor

    config = AutoConfig.from_pretrained(tiny_gemma3_vision)
    processor = AutoProcessor.from_pretrained(tiny_gemma3_vision)
    image = Image.open(io.BytesIO(png("blue")))
    inputs = processor(text=["<start_of_image> colour?"], images=[[image]], return_tensors="pt")
    image_token = processor.tokenizer.convert_tokens_to_ids("<image_soft_token>")

    assert (
        config.model_type == "gemma3" and config.vision_config.model_type == "siglip_vision_model"
    )
    assert "processor_config.json" in {p.name for p in tiny_gemma3_vision.iterdir()}
    assert type(processor.image_processor).__name__ == "Gemma3ImageProcessorPil"
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    assert int((inputs["input_ids"] == image_token).sum()) == config.mm_tokens_per_image == 4


def test_llama_cpp_layout_makes_every_layer_sliding_in_two(tmp_path: Path) -> None:
    from trainer.tiny import main

    assert main(["--out", str(tmp_path / "m"), "--llama-cpp-layers"]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["layer_types"] == ["sliding_attention", "sliding_attention"]
