"""GGUF export of a tiny Gemma 3: files written, loaded back, logits and vocabulary checked.

The model's matrices all have rows of 256 or 512 so that q4_k_m uses K-quants throughout. The
quantizer is built (about 5 minutes on 2 cores) or reused from the cache, never skipped: a CI
machine starts empty and must still prove the K-quant path.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.gguf.tiny_gemma3 import build_kquant_gemma3
from trainer import gguf
from trainer.gguf import (
    CHAT_TOKENS,
    TOLERANCES,
    GgufExportError,
    GgufIncompatibleModelError,
    ReferenceLogits,
    Tolerance,
    export_gguf,
    read_gguf,
    reference_logits,
    verify_gguf,
)
from trainer.llama_cpp import LLAMA_QUANTIZE_ENV, LlamaCppTools
from tuning.spec import GgufQuantization

Q = GgufQuantization
EXPORTED = (Q.F16, Q.Q8_0, Q.Q4_K_M)
# The first run fetches llama.cpp and builds llama-quantize inside a fixture.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(autouse=True)
def _emulators_running() -> None:
    """GGUF export touches no GCP service: no emulators for this module."""


@pytest.fixture(scope="module")
def tools() -> LlamaCppTools:
    """The pinned llama.cpp with its quantizer: built on first use, reused from the cache after."""
    if not os.environ.get(LLAMA_QUANTIZE_ENV):  # the trainer image brings its own build
        from tools.llama_cpp import build_quantizer

        build_quantizer()
    found = LlamaCppTools.locate()
    assert found.quantize_binary is not None
    return found


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_kquant_gemma3(tmp_path_factory.mktemp("gguf") / "merged")


@pytest.fixture(scope="module")
def reference(merged: Path) -> ReferenceLogits:
    return reference_logits(merged)


@pytest.fixture(scope="module")
def exported(
    tools: LlamaCppTools, merged: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[GgufQuantization, Path]:
    out = tmp_path_factory.mktemp("gguf") / "out"
    started = time.monotonic()
    files = export_gguf(merged, out, EXPORTED, tools=tools)
    print(f"\nexported {', '.join(q.value for q in files)} in {time.monotonic() - started:.1f} s")
    return files


@pytest.fixture
def f16_copy(exported: dict[GgufQuantization, Path], tmp_path: Path) -> Path:
    """A copy of the verified f16 file to damage."""
    return Path(shutil.copy(exported[Q.F16], tmp_path / "model-f16.gguf"))


def test_each_quantization_lands_under_its_layout_name_and_nothing_else(
    exported: dict[GgufQuantization, Path],
) -> None:
    assert list(exported) == list(EXPORTED)
    out = exported[Q.F16].parent
    assert sorted(p.name for p in out.iterdir()) == sorted(f"model-{q}.gguf" for q in EXPORTED)
    sizes = {q: path.stat().st_size for q, path in exported.items()}
    print(f"\nsizes: {sizes}")
    assert sizes[Q.F16] > sizes[Q.Q8_0] > sizes[Q.Q4_K_M]


@pytest.mark.parametrize("quantization", EXPORTED, ids=str)
def test_logits_round_trip_within_the_quantizations_tolerance(
    exported: dict[GgufQuantization, Path],
    merged: Path,
    reference: ReferenceLogits,
    quantization: GgufQuantization,
) -> None:
    difference = verify_gguf(exported[quantization], merged, quantization, reference=reference)
    print(f"\n{quantization}: {difference.describe()}")
    assert TOLERANCES[quantization].violations(difference) == []
    if quantization is Q.F16:
        assert difference.rel_rms < 1e-4  # bf16 weights fit f16 all but exactly
    else:
        assert difference.max_abs > 0  # really quantized, not a 16-bit copy


@pytest.mark.parametrize("quantization", EXPORTED, ids=str)
def test_the_vocabulary_is_the_tokenizers_with_turn_markers_as_control_tokens(
    exported: dict[GgufQuantization, Path], merged: Path, quantization: GgufQuantization
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    contents = read_gguf(exported[quantization])
    # The fixture saved tokenizer_config.json without added_tokens_decoder, as transformers 5
    # does; the export must still type the markers as control tokens.
    assert "added_tokens_decoder" not in json.loads((merged / "tokenizer_config.json").read_text())
    for token in CHAT_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        assert contents.tokens[token_id] == token
        assert contents.token_types[token_id] == 3  # control
    assert contents.tokens == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert contents.metadata["tokenizer.chat_template"] == tokenizer.chat_template
    assert contents.metadata["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id


def test_q4_k_m_stores_every_matrix_as_a_k_quant(exported: dict[GgufQuantization, Path]) -> None:
    from gguf import GGUFReader

    types = {t.name: t.tensor_type.name for t in GGUFReader(exported[Q.Q4_K_M]).tensors}
    matrices = {name: kind for name, kind in types.items() if not name.endswith("norm.weight")}
    assert set(matrices.values()) <= {"Q4_K", "Q6_K"}, matrices
    assert "Q4_K" in matrices.values()


def test_a_truncated_file_fails_its_check(
    f16_copy: Path, merged: Path, reference: ReferenceLogits
) -> None:
    data = f16_copy.read_bytes()
    f16_copy.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(GgufExportError, match=r"model-f16\.gguf is not a readable GGUF file"):
        verify_gguf(f16_copy, merged, Q.F16, reference=reference)


def test_a_scaled_tensor_fails_its_check_with_the_measured_difference(
    f16_copy: Path, merged: Path, reference: ReferenceLogits
) -> None:
    from gguf import GGUFReader

    # Not a projection that a Gemma norm follows (those are scale-invariant): the MLP gate.
    reader = GGUFReader(f16_copy, "r+")
    gate = next(t for t in reader.tensors if t.name == "blk.0.ffn_gate.weight")
    gate.data[...] = gate.data * np.float16(1.5)
    reader.data.flush()
    del reader, gate
    with pytest.raises(GgufExportError) as failure:
        verify_gguf(f16_copy, merged, Q.F16, reference=reference)
    message = str(failure.value)
    assert "model-f16.gguf (f16): next-token logits differ" in message
    assert "beyond the f16 tolerance" in message and "measured max |diff|" in message


def test_a_missing_tensor_fails_its_check(
    exported: dict[GgufQuantization, Path], merged: Path, reference: ReferenceLogits, tmp_path: Path
) -> None:
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    source = GGUFReader(exported[Q.F16])
    copy = tmp_path / "model-f16.gguf"
    writer = GGUFWriter(copy, arch=source.fields["general.architecture"].contents())
    for key, field in source.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            sub_type = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub_type)
    for tensor in source.tensors:
        if tensor.name != "blk.1.ffn_up.weight":
            shape = tensor.data.shape
            writer.add_tensor(
                tensor.name, tensor.data, raw_shape=shape, raw_dtype=tensor.tensor_type
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(
        GgufExportError, match=r"\(f16\) lacks the tensors of .*layers\.1\.mlp\.up_proj"
    ):
        verify_gguf(copy, merged, Q.F16, reference=reference)


def test_a_turn_marker_typed_normal_fails_its_check(
    f16_copy: Path, merged: Path, reference: ReferenceLogits
) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(f16_copy, "r+")
    field = reader.fields["tokenizer.ggml.token_type"]
    token_id = reference.special_token_ids["<end_of_turn>"]
    field.parts[field.data[token_id]][...] = 1  # normal
    reader.data.flush()
    del reader, field
    with pytest.raises(GgufExportError, match=r"'<end_of_turn>' .* has token type normal"):
        verify_gguf(f16_copy, merged, Q.F16, reference=reference)


def test_a_failed_check_fails_the_export_and_leaves_no_file(
    tools: LlamaCppTools, merged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(gguf.TOLERANCES, Q.Q8_0, Tolerance(0.0, 0.0, 1.0))
    with pytest.raises(GgufExportError, match=r"model-q8_0\.gguf \(q8_0\): next-token logits"):
        export_gguf(merged, tmp_path / "out", [Q.Q8_0], tools=tools)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_merged_model_without_tokenizer_model_is_refused_before_converting(
    merged: Path, tmp_path: Path
) -> None:
    incomplete = Path(shutil.copytree(merged, tmp_path / "merged"))
    (incomplete / "tokenizer.model").unlink()
    nowhere = LlamaCppTools(source_dir=tmp_path / "no-llama-cpp")  # must not be reached
    with pytest.raises(GgufExportError, match=r"no tokenizer\.model.*copy it from the base model"):
        export_gguf(incomplete, tmp_path / "out", [Q.F16], tools=nowhere)


def test_gemma2_round_trips_too(tools: LlamaCppTools, tiny_gemma2: Path, tmp_path: Path) -> None:
    files = export_gguf(tiny_gemma2, tmp_path / "out", [Q.Q8_0], tools=tools)
    contents = read_gguf(files[Q.Q8_0])
    assert contents.metadata["general.architecture"] == "gemma2"
    assert contents.metadata["gemma2.attn_logit_softcapping"] == 50.0


def test_a_layer_pattern_llama_cpp_would_not_run_is_refused_before_converting(
    tiny_gemma3: Path, tmp_path: Path
) -> None:
    # trainer.tiny's Gemma 3 alternates sliding and global layers; llama.cpp would run both of
    # its layers as sliding ones (with the local rope base), so its GGUF would be another model.
    nowhere = LlamaCppTools(source_dir=tmp_path / "no-llama-cpp")  # must not be reached
    with pytest.raises(
        GgufIncompatibleModelError, match=r"llama\.cpp makes every sixth layer global"
    ):
        export_gguf(tiny_gemma3, tmp_path / "out", [Q.F16], tools=nowhere)


def test_without_memory_for_the_logits_only_metadata_and_vocabulary_are_checked(
    tools: LlamaCppTools, merged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tolerance nothing meets: had the logits been compared, the export would fail.
    monkeypatch.setitem(gguf.TOLERANCES, Q.Q8_0, Tolerance(0.0, 0.0, 1.0))
    warnings: list[str] = []

    files = export_gguf(
        merged, tmp_path / "out", [Q.Q8_0], tools=tools, memory_limit=1, warn=warnings.append
    )

    assert files[Q.Q8_0].is_file()
    (warning,) = warnings
    assert "metadata and vocabulary only" in warning and "GiB" in warning


def test_the_vocabulary_check_runs_without_the_logits(
    f16_copy: Path, merged: Path, reference: ReferenceLogits
) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(f16_copy, "r+")
    field = reader.fields["tokenizer.ggml.token_type"]
    field.parts[field.data[reference.special_token_ids["<end_of_turn>"]]][...] = 1  # normal
    reader.data.flush()
    del reader, field
    with pytest.raises(GgufExportError, match=r"'<end_of_turn>' .* has token type normal"):
        verify_gguf(f16_copy, merged, Q.F16, check_logits=False)


def test_free_memory_is_measured_within_the_machine() -> None:
    available = gguf.available_memory_bytes()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < available <= total
