"""GGUF export's pure checks: logit tolerances, metadata, vocabulary, llama.cpp's assumptions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.gguf import (
    TOLERANCES,
    compare_logits,
    completed_tokenizer_config,
    expected_metadata,
    gguf_file_name,
    llama_cpp_incompatibilities,
    metadata_mismatches,
    vocabulary_problems,
)
from tuning.layout import StorageLayout
from tuning.spec import GgufQuantization

CONFIGS = json.loads((Path(__file__).parents[1] / "fixtures/gguf/gemma3_configs.json").read_text())
RELEASED = [name for name in CONFIGS if not name.startswith("_")]


def test_file_names_match_the_storage_layout() -> None:
    layout = StorageLayout(data_bucket="ddd", config_bucket="ccc", models_bucket="mmm")
    for quantization in GgufQuantization:
        assert layout.gguf_uri("job1", quantization).endswith("/" + gguf_file_name(quantization))


def test_every_quantization_has_a_tolerance_looser_as_bits_drop() -> None:
    order = [GgufQuantization.F16, GgufQuantization.Q8_0, GgufQuantization.Q4_K_M]
    assert set(TOLERANCES) == set(GgufQuantization)
    rms = [TOLERANCES[q].max_rel_rms for q in order]
    assert rms == sorted(rms)


def test_identical_logits_differ_by_nothing() -> None:
    logits = np.random.default_rng(0).normal(size=(7, 50))
    difference = compare_logits(logits, logits.copy())
    assert (difference.max_abs, difference.rel_rms, difference.top1_agreement) == (0, 0, 1)
    assert difference.positions == 7
    assert TOLERANCES[GgufQuantization.F16].violations(difference) == []


def test_differences_are_relative_to_the_reference_spread() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(scale=4.0, size=(10, 100))
    noisy = reference + rng.normal(scale=0.4, size=reference.shape)
    difference = compare_logits(reference, noisy)
    assert difference.rel_rms == pytest.approx(0.1, rel=0.1)
    assert compare_logits(reference * 10, noisy * 10).rel_rms == pytest.approx(difference.rel_rms)


def test_a_changed_top_token_counts_against_agreement() -> None:
    reference = np.zeros((4, 3))
    reference[:, 0] = 1.0
    candidate = reference.copy()
    candidate[0] = [0.0, 2.0, 0.0]
    assert compare_logits(reference, candidate).top1_agreement == 0.75


def test_nan_logits_violate_every_tolerance() -> None:
    reference = np.ones((2, 4))
    reference[:, 0] = 3.0
    candidate = reference.copy()
    candidate[1, 2] = np.nan
    violations = TOLERANCES[GgufQuantization.Q4_K_M].violations(
        compare_logits(reference, candidate)
    )
    assert any("rms" in v for v in violations) and any("max" in v for v in violations)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        compare_logits(np.zeros((2, 5)), np.zeros((2, 6)))


@pytest.mark.parametrize("name", RELEASED)
def test_released_gemma3_configs_fit_llama_cpp(name: str) -> None:
    assert llama_cpp_incompatibilities(CONFIGS[name]) == []


def test_a_query_scalar_llama_cpp_would_not_use_is_reported() -> None:
    config = CONFIGS["gemma-3-1b"] | {"query_pre_attn_scalar": 64}
    [problem] = llama_cpp_incompatibilities(config)
    assert "query_pre_attn_scalar is 64" in problem and "1/sqrt(256)" in problem


def test_a_layer_pattern_other_than_every_sixth_global_is_reported() -> None:
    config = CONFIGS["gemma-3-1b"] | {
        "num_hidden_layers": 2,
        "layer_types": ["sliding_attention", "full_attention"],
    }
    [problem] = llama_cpp_incompatibilities(config)
    assert "every sixth layer" in problem


def test_expected_metadata_reads_old_and_new_rope_keys() -> None:
    old = expected_metadata(CONFIGS["gemma-3-1b"])
    new = expected_metadata(CONFIGS["gemma-3-27b-text"])
    assert old["gemma3.rope.freq_base"] == new["gemma3.rope.freq_base"] == 1_000_000.0
    assert old["gemma3.rope.freq_base_swa"] == new["gemma3.rope.freq_base_swa"] == 10_000.0
    assert "gemma3.final_logit_softcapping" not in new  # null: nothing to check
    assert new["gemma3.attention.key_length"] == 128


def test_metadata_as_the_converter_writes_it_matches() -> None:
    expected = expected_metadata(CONFIGS["gemma-3-270m"])
    # float32 in the file: 1e-06 comes back as 9.99999997e-07
    written = dict(expected) | {"gemma3.attention.layer_norm_rms_epsilon": 9.999999974752427e-07}
    assert metadata_mismatches(written, expected) == []


def test_metadata_mismatches_name_the_key_and_both_values() -> None:
    expected = expected_metadata(CONFIGS["gemma-3-270m"])
    written = dict(expected) | {"gemma3.block_count": 17}
    del written["gemma3.attention.sliding_window"]
    assert metadata_mismatches(written, expected) == [
        "gemma3.block_count is 17, expected 18",
        "gemma3.attention.sliding_window is missing (expected 512)",
    ]


TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "hello"]
EXPECTED_IDS = {"<bos>": 2, "<eos>": 1, "<start_of_turn>": 4, "<end_of_turn>": 5}


def test_turn_markers_as_control_or_user_defined_tokens_pass() -> None:
    assert vocabulary_problems(TOKENS, [3, 3, 3, 2, 3, 4, 1], EXPECTED_IDS) == []


def test_a_turn_marker_typed_normal_is_reported() -> None:
    [problem] = vocabulary_problems(TOKENS, [3, 3, 3, 2, 1, 3, 1], EXPECTED_IDS)
    assert "'<start_of_turn>' (id 4) has token type normal" in problem


def test_a_missing_or_moved_turn_marker_is_reported() -> None:
    tokens = [*TOKENS[:4], "[PAD4]", "<end_of_turn>"]
    problems = vocabulary_problems(tokens, [3] * 6, EXPECTED_IDS | {"<extra>": 9})
    assert problems == [
        "id 4 is '[PAD4]', expected '<start_of_turn>'",
        "'<extra>' (id 9) is beyond the 6-token vocabulary",
    ]


def test_added_tokens_decoder_is_restored_from_tokenizer_json() -> None:
    tokenizer_json = {
        "added_tokens": [
            {"id": 0, "content": "<pad>", "special": True, "normalized": False},
            {"id": 4, "content": "<start_of_turn>", "special": True, "normalized": False},
        ]
    }
    saved = {"tokenizer_class": "GemmaTokenizer"}  # as transformers 5 writes it
    completed = completed_tokenizer_config(saved, tokenizer_json)
    assert completed["tokenizer_class"] == "GemmaTokenizer"
    assert completed["added_tokens_decoder"]["4"] == {
        "content": "<start_of_turn>",
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def test_an_existing_added_tokens_decoder_wins() -> None:
    mine = {"content": "<start_of_turn>", "special": False}
    saved = {"added_tokens_decoder": {"4": mine}}
    tokenizer_json = {"added_tokens": [{"id": 4, "content": "<start_of_turn>", "special": True}]}
    assert completed_tokenizer_config(saved, tokenizer_json)["added_tokens_decoder"]["4"] == mine
