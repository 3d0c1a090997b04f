"""The model's dtypes, its parameter count, and what LoRA and QLoRA leave out (pure, no GPU).

Models are built in memory from small configs; bitsandbytes is not needed to check which
modules the quantization config would convert: transformers' own matcher decides that.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from trainer.hardware import Hardware, compute_dtype_name, merge_dtype_name
from trainer.modeling import lora_config, parameter_count, quantization_config, weights_dtype_name
from tuning.spec import Hyperparameters, Method

CPU = Hardware(cuda=False, bf16=False, flash_attention=False)
L4 = Hardware(cuda=True, bf16=True, flash_attention=False, name="NVIDIA L4")
T4 = Hardware(cuda=True, bf16=False, flash_attention=False, name="Tesla T4")


def tiny_multimodal() -> Any:
    """A Gemma3ForConditionalGeneration: a 2-layer language model beside a 1-layer SigLIP."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3Config

    config = Gemma3Config(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "vocab_size": 128,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
            "vision_use_head": False,  # as in Gemma 3
        },
        mm_tokens_per_image=4,
        image_token_index=127,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def linear_names(model: Any) -> list[str]:
    import torch

    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]


def test_full_fine_tuning_loads_float32_master_weights_on_a_bf16_gpu() -> None:
    assert weights_dtype_name(Method.FULL, L4) == "float32"
    assert weights_dtype_name(Method.FULL, CPU) == "float32"
    # The frozen base of an adapter job stays in the compute dtype.
    assert weights_dtype_name(Method.LORA, L4) == compute_dtype_name(L4) == "bfloat16"
    assert weights_dtype_name(Method.QLORA, L4) == "bfloat16"
    assert weights_dtype_name(Method.LORA, CPU) == "float32"


def test_merge_is_never_float16() -> None:
    hardware = [
        Hardware(cuda=cuda, bf16=bf16, flash_attention=flash)
        for cuda, bf16, flash in itertools.product((False, True), repeat=3)
    ]

    assert all(merge_dtype_name(each) != "float16" for each in hardware)
    assert merge_dtype_name(L4) == "bfloat16"
    assert merge_dtype_name(T4) == "float32"  # no bf16: float32, not float16
    assert merge_dtype_name(CPU) == "bfloat16"


def test_parameter_count_is_the_configs_not_the_packed_storage() -> None:
    import torch

    model = tiny_multimodal()
    expected = sum(parameter.numel() for parameter in model.parameters())
    # bitsandbytes stores 4-bit weights two to a byte: a (n/2, 1) uint8 tensor per weight.
    for name in linear_names(model):
        if ".language_model." in name:
            module = model.get_submodule(name)
            packed = torch.zeros((module.weight.numel() // 2, 1), dtype=torch.uint8)
            module.weight = torch.nn.Parameter(packed, requires_grad=False)
    stored = sum(parameter.numel() for parameter in model.parameters())

    assert stored < expected
    assert parameter_count(model) == expected


def test_qlora_on_a_multimodal_model_skips_its_image_path_and_lm_head() -> None:
    import torch
    from transformers.quantizers.quantizers_utils import should_convert_module

    model = tiny_multimodal()
    skips = quantization_config(torch.bfloat16, image_path=True).llm_int8_skip_modules
    converted = {name for name in linear_names(model) if should_convert_module(name, skips)}

    assert converted and all(".language_model." in name for name in converted)
    assert converted == {name for name in linear_names(model) if ".language_model." in name}
    assert quantization_config(torch.bfloat16, image_path=False).llm_int8_skip_modules is None


@pytest.mark.parametrize("exclude_image_path", [True, False])
def test_lora_on_a_text_job_leaves_the_image_path_alone(exclude_image_path: bool) -> None:
    from peft import get_peft_model

    hyperparameters = Hyperparameters(lora_rank=4, lora_alpha=8)
    model = get_peft_model(
        tiny_multimodal(), lora_config(hyperparameters, exclude_image_path=exclude_image_path)
    )
    wrapped = {
        name.removesuffix(".lora_A") for name, _ in model.named_modules() if name.endswith("lora_A")
    }
    on_image_path = {name for name in wrapped if "vision_tower" in name}

    assert {name for name in wrapped if ".language_model." in name}  # 2 layers x 7 projections
    assert len(wrapped - on_image_path) == 14
    # A vision job trains the tower too (6 linear layers); a text job never reaches it.
    assert len(on_image_path) == (0 if exclude_image_path else 6)
