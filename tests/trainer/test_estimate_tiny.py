"""The estimate's parameter count against the tiny models the trainer builds, counted by torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuning.estimates import ModelShape


@pytest.mark.parametrize("fixture", ["tiny_gemma3", "tiny_gemma2", "tiny_gemma3_vision"])
def test_parameters_from_config_equal_the_built_models(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    snapshot: Path = request.getfixturevalue(fixture)
    config = json.loads((snapshot / "config.json").read_text())
    model_class = AutoModelForImageTextToText if "vision" in fixture else AutoModelForCausalLM
    model = model_class.from_pretrained(snapshot)
    language = model.get_decoder() if "vision" in fixture else model.model

    shape = ModelShape.from_config(config)

    # parameters() yields a tied embedding once, as the estimate counts it.
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    assert shape.language_parameters == sum(p.numel() for p in language.parameters())
    linear = sum(
        module.weight.numel()
        for name, module in language.named_modules()
        if name.startswith("layers.") and type(module).__name__ == "Linear"
    )
    assert shape.language_linear_parameters == linear
