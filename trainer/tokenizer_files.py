"""Tokenizer files as a complete Gemma snapshot has them, whatever save_pretrained wrote.

transformers 5 `save_pretrained` writes tokenizer.json but neither the
sentencepiece `tokenizer.model` nor `added_tokens_decoder` in
tokenizer_config.json; llama.cpp's GGUF conversion and older loaders need
both, so they are restored from the base snapshot and the live tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SENTENCEPIECE_MODEL = "tokenizer.model"
TOKENIZER_CONFIG = "tokenizer_config.json"
GENERATION_CONFIG = "generation_config.json"
END_OF_TURN = "<end_of_turn>"
# Keys save_pretrained records about the machine it ran on, not about the tokenizer.
_LOCAL_KEYS = ("vocab_file", "is_local", "local_files_only")


def complete_tokenizer_files(target: Path, *, source: Path | None, tokenizer: Any) -> None:
    """Add tokenizer.model and added_tokens_decoder to a saved model directory."""
    spm_model = source / SENTENCEPIECE_MODEL if source is not None else None
    if (
        spm_model is not None
        and spm_model.is_file()
        and not (target / SENTENCEPIECE_MODEL).exists()
    ):
        shutil.copyfile(spm_model, target / SENTENCEPIECE_MODEL)
    config_path = target / TOKENIZER_CONFIG
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    for key in _LOCAL_KEYS:
        config.pop(key, None)
    config.setdefault("added_tokens_decoder", added_tokens_decoder(tokenizer))
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def added_tokens_decoder(tokenizer: Any) -> dict[str, dict[str, Any]]:
    """{id: {content, lstrip, normalized, rstrip, single_word, special}} as the Hub stores it."""
    return {
        str(token_id): {
            "content": token.content,
            "lstrip": token.lstrip,
            "normalized": token.normalized,
            "rstrip": token.rstrip,
            "single_word": token.single_word,
            "special": token.special,
        }
        for token_id, token in sorted(tokenizer.added_tokens_decoder.items())
    }


def stop_on_end_of_turn(target: Path, tokenizer: Any) -> None:
    """Make generation stop at <end_of_turn> (what the model learned to emit), not only at <eos>."""
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if not isinstance(end_of_turn, int) or end_of_turn == tokenizer.unk_token_id:
        return
    path = target / GENERATION_CONFIG
    config = json.loads(path.read_text()) if path.is_file() else {}
    eos = config.get("eos_token_id", tokenizer.eos_token_id)
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    if end_of_turn not in eos_ids:
        eos_ids.append(end_of_turn)
    config["eos_token_id"] = eos_ids
    config.setdefault("bos_token_id", tokenizer.bos_token_id)
    config.setdefault("pad_token_id", tokenizer.pad_token_id)
    path.write_text(json.dumps(config, indent=2) + "\n")
