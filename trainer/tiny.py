"""Tiny Gemma models for tests and the local demo, built offline in about a second.

    python -m trainer.tiny --out .local/tiny-gemma3 [--family gemma2|gemma3-vision] [--seed 0]
        [--llama-cpp-layers] [--words cat black ...]

The tokenizer is a real sentencepiece BPE model (with byte fallback) trained on
generated text, with Gemma's special tokens at Gemma's ids for pad/eos/bos/unk,
the turn markers as special added tokens, and the Gemma chat template. The
snapshot has what a Hub Gemma has: config.json, generation_config.json,
model.safetensors, tokenizer.model, tokenizer.json, tokenizer_config.json and
chat_template.jinja.

`gemma3-vision` is a Gemma3ForConditionalGeneration with a one-layer SigLIP tower on 32x32
images (4 patches of 8 px pooled to 4 soft tokens per image) and the processor a Hub Gemma 3
has (processor_config.json with the PIL image processor, so no torchvision is needed; the
tokenizer knows <image_soft_token> and the image markers). `llama_cpp_layers` lays out the
text model's attention as llama.cpp assumes for Gemma 3 (every sixth layer global), which GGUF
export requires.
"""

from __future__ import annotations

import argparse
import io
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FAMILIES = ("gemma3", "gemma2", "gemma3-vision")
# After <pad>=0, <eos>=1, <bos>=2, <unk>=3 (Gemma's order), in this order.
SPECIAL_PIECES = [
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
]
END_OF_TURN = "<end_of_turn>"
IMAGE_TOKEN = "<image_soft_token>"  # added after the vocabulary, as Hub Gemma 3 has it
BEGIN_IMAGE, END_IMAGE = "<start_of_image>", "<end_of_image>"
IMAGE_SIZE = 32
IMAGE_TOKENS = 4  # soft tokens per image: the 4x4 patch grid average-pooled to 2x2
VOCAB_SIZE = 1024
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"
_COMMON = ["the", "a", "is", "of", "and", "to", "what", "which", "colour", "answer", "yes", "no"]
_WORD_LINES = 1000


def generated_corpus(seed: int, lines: int = 3000, words: Sequence[str] = ()) -> list[str]:
    """Varied enough text (words, digits, punctuation) to fill a ~1k BPE vocabulary.

    `words` are mentioned often enough (in 1,000 more lines) that BPE learns each, with its
    leading space, as one piece: a task on them is then a mapping of single tokens, which a tiny
    random model learns in a few hundred steps (the demo's animals and colours)."""
    rng = random.Random(seed)
    pool = ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(2, 8))) for _ in range(500)]
    pool += _COMMON
    corpus = []
    for _ in range(lines):
        sentence = " ".join(rng.choice(pool) for _ in range(rng.randint(3, 14)))
        corpus.append(f"{sentence.capitalize()} {rng.randint(0, 9999)}{rng.choice('.?!,:')}")
    if words:
        mentions = random.Random(seed + 1)
        for _ in range(_WORD_LINES):
            sentence = " ".join(mentions.choice(words) for _ in range(mentions.randint(3, 10)))
            corpus.append(f"{sentence.capitalize()}.")
    return corpus


def train_sentencepiece(seed: int = 0, words: Sequence[str] = ()) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(generated_corpus(seed, words=words)),
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


def build_tokenizer(
    directory: Path, *, family: str, seed: int = 0, words: Sequence[str] = ()
) -> Any:
    """Write tokenizer.model and the fast tokenizer files into `directory`."""
    from transformers import AddedToken, GemmaTokenizer
    from trl.chat_template_utils import gemma3_chat_template, gemma_chat_template

    from trainer.tokenizer_files import complete_tokenizer_files

    directory.mkdir(parents=True, exist_ok=True)
    model = train_sentencepiece(seed, words)
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


def model_config(family: str, tokenizer: Any, *, llama_cpp_layers: bool = False) -> Any:
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
    if family == "gemma2":
        return Gemma2Config(**common)
    # llama.cpp makes every sixth Gemma 3 layer global; two layers are then both sliding.
    layer_types = ["sliding_attention"] * 2 if llama_cpp_layers else None
    text = Gemma3TextConfig(
        **common, layer_types=layer_types or ["sliding_attention", "full_attention"]
    )
    if family == "gemma3":
        return text
    return vision_config(text, tokenizer)


def vision_config(text: Any, tokenizer: Any) -> Any:
    """Gemma 3 multimodal: the tiny text model and a one-layer SigLIP tower on 32 px images."""
    from transformers import Gemma3Config, SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
        vision_use_head=False,  # Gemma 3 reads the patch embeddings, not SigLIP's pooled head
    )
    # Repeated at the top level, where Hub Gemma 3 configs have them too.
    special_tokens: dict[str, Any] = {
        "pad_token_id": text.pad_token_id,
        "bos_token_id": text.bos_token_id,
        "eos_token_id": text.eos_token_id,
    }
    return Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=IMAGE_TOKENS,
        boi_token_index=tokenizer.convert_tokens_to_ids(BEGIN_IMAGE),
        eoi_token_index=tokenizer.convert_tokens_to_ids(END_IMAGE),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        **special_tokens,
    )


def add_image_tokens(directory: Path) -> Any:
    """Give the saved tokenizer Gemma 3's image tokens and names, and return it reloaded."""
    from transformers import AddedToken, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.add_special_tokens(
        {"extra_special_tokens": [AddedToken(IMAGE_TOKEN, special=True, normalized=False)]},
        replace_extra_special_tokens=False,
    )
    tokenizer.save_pretrained(directory)
    # The processor finds its tokens by these names, as in a Hub Gemma 3 tokenizer_config.json.
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(boi_token=BEGIN_IMAGE, eoi_token=END_IMAGE, image_token=IMAGE_TOKEN)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    from trainer.tokenizer_files import complete_tokenizer_files

    tokenizer = AutoTokenizer.from_pretrained(directory)
    complete_tokenizer_files(directory, source=None, tokenizer=tokenizer)
    return tokenizer


def save_processor(directory: Path, tokenizer: Any) -> None:
    """processor_config.json as a Hub Gemma 3 has it, with the PIL image processor."""
    from transformers import Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    image_processor = Gemma3ImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_pan_and_scan=False
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
        image_seq_length=IMAGE_TOKENS,
    )
    processor.save_pretrained(directory)


def build_tiny_gemma(
    out: Path | str,
    *,
    family: str = "gemma3",
    seed: int = 0,
    llama_cpp_layers: bool = False,
    words: Sequence[str] = (),
) -> Path:
    """Build a tiny Gemma 3 (text or vision) or Gemma 2 snapshot in `out`; return its path.

    `words`: single tokens of the vocabulary (see `generated_corpus`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, GenerationConfig

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}")
    directory = Path(out)
    vision = family == "gemma3-vision"
    tokenizer = build_tokenizer(
        directory, family="gemma2" if family == "gemma2" else "gemma3", seed=seed, words=words
    )
    if vision:
        tokenizer = add_image_tokens(directory)
        save_processor(directory, tokenizer)
    config = model_config(family, tokenizer, llama_cpp_layers=llama_cpp_layers)
    torch.manual_seed(seed)
    model_class = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    model = model_class.from_config(config)
    if vision:
        # Initialized to zeros, the projection would hide every image from the language model
        # (and the vision tower would never get a gradient); a trained Gemma 3 has real values.
        with torch.no_grad():
            model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.05)
    text = config.get_text_config()
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id,
        eos_token_id=text.eos_token_id,
        pad_token_id=text.pad_token_id,
    )
    model.save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a tiny Gemma model snapshot offline.")
    parser.add_argument("--out", required=True, type=Path, help="directory to write")
    parser.add_argument("--family", choices=FAMILIES, default="gemma3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--llama-cpp-layers",
        action="store_true",
        help="every sixth layer global, as llama.cpp assumes (needed for GGUF export)",
    )
    parser.add_argument(
        "--words",
        nargs="+",
        default=(),
        metavar="WORD",
        help="words the vocabulary must hold as single tokens (e.g. a demo task's)",
    )
    args = parser.parse_args(argv)
    path = build_tiny_gemma(
        args.out,
        family=args.family,
        seed=args.seed,
        llama_cpp_layers=args.llama_cpp_layers,
        words=args.words,
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
