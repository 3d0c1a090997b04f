"""Token counts for `tuning datasets validate --tokenizer DIR`.

A model folder's `tokenizer.json` is read with the `tokenizers` library alone: the same counts
as transformers' fast tokenizer (the same file and post-processor, so BOS included), without
importing transformers, which loads torch and its thread pools next to pyarrow's. With those
C++ pools alive the process could end in `terminate called without an active exception` as
the interpreter exits; `tokenizers` alone starts none of them. A folder without a
`tokenizer.json` (only a sentencepiece model) goes through transformers as before.
"""

from __future__ import annotations

from pathlib import Path

from tuning.cli.client import ClientError
from tuning.dataset.tokens import TOKENIZER_FILES, ChatTokenizer

TOKENIZER_FILE = "tokenizer.json"


def templated_counter(model_dir: Path) -> ChatTokenizer | None:
    """The counter dispatch's validation and the trainer use, when the folder has a
    tokenizer.json and a chat template (tuning.dataset.tokens); None otherwise."""
    if not (model_dir / TOKENIZER_FILE).is_file():
        return None
    present = [model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    counter = ChatTokenizer.from_files({path.name: path.read_bytes() for path in present})
    return counter if counter.chat_template else None


def count_tokens(model_dir: Path, texts: list[str]) -> list[int]:
    """The number of tokens of each text, special tokens included, as training counts them."""
    if not model_dir.is_dir():
        raise ClientError(f"{model_dir}: no such model folder (--tokenizer takes a folder)")
    if (model_dir / TOKENIZER_FILE).is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        return [len(encoding.ids) for encoding in tokenizer.encode_batch(texts)]
    from transformers import AutoTokenizer

    try:
        loaded = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise ClientError(f"{model_dir}: no tokenizer to load ({error})") from None
    return [len(ids) for ids in loaded(texts)["input_ids"]]
