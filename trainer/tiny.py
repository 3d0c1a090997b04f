"""Tiny Gemma models for tests and the local demo, built offline in about a second.

    python -m trainer.tiny --out .local/tiny-gemma3 [--family gemma2] [--seed 0]

The tokenizer is a real sentencepiece BPE model (with byte fallback) trained on
generated text, with Gemma's special tokens at Gemma's ids for pad/eos/bos/unk,
the turn markers as special added tokens, and the Gemma chat template. The
snapshot has what a Hub Gemma has: config.json, generation_config.json,
model.safetensors, tokenizer.model, tokenizer.json, tokenizer_config.json and
chat_template.jinja.
"""

from __future__ import annotations

import argparse
import io
import random
from pathlib import Path
from typing import Any

FAMILIES = ("gemma3", "gemma2")
# After <pad>=0, <eos>=1, <bos>=2, <unk>=3 (Gemma's order), in this order.
SPECIAL_PIECES = [
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
]
END_OF_TURN = "<end_of_turn>"
VOCAB_SIZE = 1024
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"
_COMMON = ["the", "a", "is", "of", "and", "to", "what", "which", "colour", "answer", "yes", "no"]


def generated_corpus(seed: int, lines: int = 3000) -> list[str]:
    """Varied enough text (words, digits, punctuation) to fill a ~1k BPE vocabulary."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(2, 8))) for _ in range(500)]
    words += _COMMON
    corpus = []
    for _ in range(lines):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14)))
        corpus.append(f"{sentence.capitalize()} {rng.randint(0, 9999)}{rng.choice('.?!,:')}")
    return corpus


def train_sentencepiece(seed: int = 0) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(generated_corpus(seed)),
        model_writer=model,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=SPECIAL_PIECES,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=False,  # Gemma adds no prefix space
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def bpe_vocab_and_merges(model: bytes) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The fast tokenizer's vocabulary and merges, read through sentencepiece's own API.

    transformers would convert tokenizer.model through its protobuf schema, which breaks
    whenever the installed protobuf is older than the one sentencepiece was generated with.
    """
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_proto=model)
    vocab = {processor.id_to_piece(i): i for i in range(processor.get_piece_size())}
    merges = []
    for piece, piece_id in vocab.items():
        if processor.is_control(piece_id) or processor.is_byte(piece_id) or len(piece) < 2:
            continue
        if processor.is_unknown(piece_id) or piece in SPECIAL_PIECES:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((piece_id, vocab[left], vocab[right], left, right))
    # BPE applies merges in the order the pieces were learned, i.e. by piece id.
    merges.sort()
    return vocab, [(left, right) for *_, left, right in merges]


def build_tokenizer(directory: Path, *, family: str, seed: int = 0) -> Any:
    """Write tokenizer.model and the fast tokenizer files into `directory`."""
    from transformers import AddedToken, GemmaTokenizer
    from trl.chat_template_utils import gemma3_chat_template, gemma_chat_template

    from trainer.tokenizer_files import complete_tokenizer_files

    directory.mkdir(parents=True, exist_ok=True)
    model = train_sentencepiece(seed)
    (directory / "tokenizer.model").write_bytes(model)
    vocab, merges = bpe_vocab_and_merges(model)
    # Pairs, not "a b" strings: a piece may itself contain whitespace such as a tab.
    pairs: Any = merges
    tokenizer = GemmaTokenizer(vocab=vocab, merges=pairs, add_bos_token=True)
    tokenizer.add_special_tokens(
        {
            "additional_special_tokens": [
                AddedToken(p, special=True, normalized=False) for p in SPECIAL_PIECES
            ]
        }
    )
    tokenizer.chat_template = gemma3_chat_template if family == "gemma3" else gemma_chat_template
    tokenizer.save_pretrained(directory)
    # tokenizer.model is already there; add added_tokens_decoder as a Hub Gemma has it.
    complete_tokenizer_files(directory, source=None, tokenizer=tokenizer)
    return tokenizer


def model_config(family: str, tokenizer: Any) -> Any:
    """Hidden 64, 2 layers: one sliding-window and one global attention layer, like Gemma."""
    from transformers import Gemma2Config, Gemma3TextConfig

    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 4096,
        "sliding_window": 64,
        "query_pre_attn_scalar": 16,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TURN)],
    }
    if family == "gemma3":
        return Gemma3TextConfig(**common, layer_types=["sliding_attention", "full_attention"])
    return Gemma2Config(**common)


def build_tiny_gemma(out: Path | str, *, family: str = "gemma3", seed: int = 0) -> Path:
    """Build a tiny Gemma 3 (text) or Gemma 2 snapshot in `out` and return its path."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}")
    directory = Path(out)
    tokenizer = build_tokenizer(directory, family=family, seed=seed)
    config = model_config(family, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a tiny Gemma model snapshot offline.")
    parser.add_argument("--out", required=True, type=Path, help="directory to write")
    parser.add_argument("--family", choices=FAMILIES, default="gemma3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_tiny_gemma(args.out, family=args.family, seed=args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
