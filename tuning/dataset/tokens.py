"""Token counts per row without transformers or torch: what the trainer will tokenize.

The base model's `tokenizer.json` is read with the `tokenizers` library (the file and the
post-processor transformers' fast tokenizer uses), and its chat template is rendered with jinja2
the way transformers renders it (`transformers.utils.chat_template_utils`: a sandboxed
environment with `trim_blocks` and `lstrip_blocks`, `raise_exception`, a `tojson` that does not
escape HTML, the named special tokens as variables; the rendered text is tokenized without
adding special tokens, since the template writes them). So the validation before any GPU,
`tuning datasets validate` and the trainer's statistics count the same tokens, and a row the
template rejects is found before a GPU is claimed. tests/trainer/test_token_counts.py holds
these counts equal to transformers' and TRL's on a real Gemma tokenizer and template.

A row's length is what its trainer tokenizes: the whole conversation for SFT (plain-string
prompt/completion rows as a user and an assistant turn when the model has a chat template, as
trainer/sft.py trains them; else the raw text and EOS, as TRL does), the prompt plus the longer
answer for preference rows, the prompt alone for GRPO (completions are generated), and for
vision rows the text with every image expanded to its soft tokens, as Gemma 3's processor
expands it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tuning.dataset.rows import RowFormat, RowProblem, describe_problems
from tuning.dataset.splits import SplitFile
from tuning.failures import DatasetError

# What a model folder holds that counting needs (transformers 5 writes the template to its own
# file; older snapshots keep it in tokenizer_config.json).
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
PROCESSOR_CONFIG_FILE = "processor_config.json"
TOKENIZER_FILES = (
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    CHAT_TEMPLATE_FILE,
    SPECIAL_TOKENS_FILE,
    PROCESSOR_CONFIG_FILE,
)
NAMED_SPECIAL_TOKENS = (
    *("bos_token", "eos_token", "unk_token", "sep_token"),
    *("pad_token", "cls_token", "mask_token"),
)
# Gemma 3's processor: an image becomes "\n\n<boi>" + image_seq_length soft tokens + "<eoi>\n\n".
DEFAULT_IMAGE_SEQ_LENGTH = 256
# Rows encoded per call of the Rust tokenizer (it spreads a batch over the CPU's cores).
ENCODE_BATCH = 1024

_TEMPLATE_FIELD = {RowFormat.MESSAGES: "messages", RowFormat.VISION_MESSAGES: "messages"}


@dataclass(frozen=True)
class Piece:
    """A text to count; `special`: with the tokenizer's BOS (plain text, not a rendered chat),
    `extra`: tokens added after encoding (TRL appends EOS to plain-text completions)."""

    text: str
    special: bool = False
    extra: int = 0


class TokenizerFilesError(ValueError):
    """The model folder has no tokenizer this module can read (no tokenizer.json)."""


class CannotCountError(ValueError):
    """The model's files do not say how the trainer tokenizes these rows (chat rows and no
    chat template: the trainer then uses the Gemma one; vision rows and no image expansion):
    no count, rather than a wrong one."""


@dataclass(frozen=True)
class ImageExpansion:
    marker: str  # what the template writes per image (<start_of_image>)
    expanded: str  # what the processor replaces it with


class ChatTokenizer:
    """A model's tokenizer and chat template, as the trainer will apply them."""

    def __init__(
        self,
        tokenizer_json: str,
        *,
        config: Mapping[str, Any],
        chat_template: str | None,
        special_tokens: Mapping[str, Any] | None = None,
        processor_config: Mapping[str, Any] | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_str(tokenizer_json)
        self.chat_template = chat_template
        named = {**(special_tokens or {}), **config}
        self.special_tokens = {
            name: _token_text(named[name]) for name in NAMED_SPECIAL_TOKENS if named.get(name)
        }
        self.image = _image_expansion(config, processor_config)
        self._template: Any = None

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> ChatTokenizer:
        """From a model folder's files by name (those of TOKENIZER_FILES it has)."""
        if TOKENIZER_FILE not in files:
            raise TokenizerFilesError(
                f"the model has no {TOKENIZER_FILE} (a sentencepiece-only tokenizer cannot be "
                "counted before training)"
            )
        config = _json(files.get(TOKENIZER_CONFIG_FILE))
        template = files.get(CHAT_TEMPLATE_FILE)
        return cls(
            files[TOKENIZER_FILE].decode("utf-8"),
            config=config,
            chat_template=template.decode("utf-8") if template else _config_template(config),
            special_tokens=_json(files.get(SPECIAL_TOKENS_FILE)),
            processor_config=_json(files.get(PROCESSOR_CONFIG_FILE)) or None,
        )

    # Rendering and encoding --------------------------------------------------------------------

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = False) -> str:
        """The conversation as the chat template writes it (jinja2's TemplateError if rejected)."""
        if not self.chat_template:
            raise CannotCountError("the model has no chat template")
        self.compile_template()
        return str(
            self._template.render(
                messages=[{k: v for k, v in m.items() if v is not None} for m in messages],
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        )

    def compile_template(self) -> None:
        """Compile the chat template now (jinja2's TemplateSyntaxError if it is broken)."""
        if self._template is None and self.chat_template:
            self._template = _compile(self.chat_template)

    def count(self, texts: list[str], *, add_special_tokens: bool) -> list[int]:
        lengths: list[int] = []
        for start in range(0, len(texts), ENCODE_BATCH):
            batch = texts[start : start + ENCODE_BATCH]
            encoded = self._tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens)
            lengths.extend(len(encoding.ids) for encoding in encoded)
        return lengths

    # Rows ------------------------------------------------------------------------------------

    def row_lengths(
        self,
        rows: list[dict[str, Any]],
        row_format: RowFormat,
        *,
        split: SplitFile,
        max_length: int | None = None,
        first_row: int = 0,
    ) -> list[int]:
        """Tokens per row as its trainer will tokenize it (before truncation).

        Rows the template rejects, and vision rows whose images truncation at `max_length`
        would cut, raise one DatasetError naming them (`first_row`: the index of rows[0] in its
        split, for a split counted in chunks).
        """
        from jinja2 import TemplateError

        plans: list[list[Piece]] = []  # per row: the texts whose lengths make its length
        problems: list[RowProblem] = []
        field = _TEMPLATE_FIELD.get(row_format, "prompt")
        for index, row in enumerate(rows):
            try:
                plans.append(self._texts(row, row_format))
            except TemplateError as error:
                problems.append(
                    RowProblem(first_row + index, field, f"the chat template rejects it: {error}")
                )
                plans.append([])
        with_special = [piece.text for plan in plans for piece in plan if piece.special]
        without = [piece.text for plan in plans for piece in plan if not piece.special]
        counted = {
            True: iter(self.count(with_special, add_special_tokens=True)),
            False: iter(self.count(without, add_special_tokens=False)),
        }
        lengths = []
        for index, plan in enumerate(plans):
            parts = [next(counted[piece.special]) + piece.extra for piece in plan]
            if row_format is RowFormat.VISION_MESSAGES and parts:
                total, images_end = parts
                if max_length is not None and images_end > max_length:
                    problems.append(_cut_image(first_row + index, images_end, max_length))
                lengths.append(total)
            elif row_format in _LONGEST:
                lengths.append(max(parts, default=0))
            else:
                lengths.append(sum(parts))
        if problems:
            raise DatasetError(describe_problems(split, problems))
        return lengths

    def _texts(self, row: dict[str, Any], row_format: RowFormat) -> list[Piece]:
        """The texts whose counts make the row's length."""
        chat = self.render
        match row_format:
            case RowFormat.PROMPT_COMPLETION:
                if self.chat_template:  # trained as a user and an assistant turn (trainer/sft.py)
                    turns = [
                        {"role": "user", "content": row["prompt"]},
                        {"role": "assistant", "content": row["completion"]},
                    ]
                    return [Piece(chat(turns))]
                return [Piece(row["prompt"] + row["completion"], special=True, extra=1)]
            case RowFormat.MESSAGES:
                return [Piece(chat(row["messages"]))]
            case RowFormat.CONVERSATIONAL_PROMPT_COMPLETION:
                return [Piece(chat(row["prompt"] + row["completion"]))]
            case RowFormat.PREFERENCE:
                longer = max(row["chosen"], row["rejected"], key=len)
                return [Piece(row["prompt"] + longer, special=True, extra=1)]
            case RowFormat.CONVERSATIONAL_PREFERENCE:
                return [Piece(chat(row["prompt"] + row[answer])) for answer in _ANSWERS]
            case RowFormat.PROMPT_ONLY:
                return [Piece(row["prompt"], special=True)]
            case RowFormat.CONVERSATIONAL_PROMPT_ONLY:
                return [Piece(chat(row["prompt"], add_generation_prompt=True))]
            case RowFormat.VISION_MESSAGES:
                return self._vision_texts(row)
        raise ValueError(f"no token count for {row_format}")

    def _vision_texts(self, row: dict[str, Any]) -> list[Piece]:
        """The whole text, then the text up to the end of the last image (truncation check)."""
        if self.image is None:
            raise CannotCountError("the model's processor does not say how it expands images")
        marker, expanded = self.image.marker, self.image.expanded
        text = self.render(row["messages"])
        head, _, _ = text.rpartition(marker)
        return [
            Piece(text.replace(marker, expanded)),
            Piece(head.replace(marker, expanded) + expanded),
        ]


_ANSWERS = ("chosen", "rejected")
_LONGEST = {RowFormat.CONVERSATIONAL_PREFERENCE}


def _cut_image(row: int, images_end: int, max_length: int) -> RowProblem:
    return RowProblem(
        row,
        "images",
        f"its images end at token {images_end}, beyond max_seq_length {max_length}: "
        "truncation would cut an image; raise hyperparameters.max_seq_length",
    )


def _token_text(value: Any) -> str:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    return str(value.get("content", "")) if isinstance(value, dict) else str(value)


def _json(data: bytes | None) -> dict[str, Any]:
    if not data:
        return {}
    value = json.loads(data)
    return value if isinstance(value, dict) else {}


def _config_template(config: Mapping[str, Any]) -> str | None:
    """tokenizer_config.json's chat_template: a string, or named templates (the default one)."""
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {
            item.get("name"): item.get("template") for item in template if isinstance(item, dict)
        }
        template = named.get("default")
    return template if isinstance(template, str) else None


def _image_expansion(
    config: Mapping[str, Any], processor_config: Mapping[str, Any] | None
) -> ImageExpansion | None:
    if processor_config is None:
        return None
    boi, eoi, soft = (config.get(name) for name in ("boi_token", "eoi_token", "image_token"))
    if not (boi and eoi and soft):
        return None
    length = int(processor_config.get("image_seq_length") or DEFAULT_IMAGE_SEQ_LENGTH)
    boi, eoi, soft = _token_text(boi), _token_text(eoi), _token_text(soft)
    return ImageExpansion(marker=boi, expanded=f"\n\n{boi}{soft * length}{eoi}\n\n")


def _compile(source: str) -> Any:
    """The template in an environment like transformers' (sandboxed: templates are untrusted)."""
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            value,
            ensure_ascii=ensure_ascii,
            indent=indent,
            separators=separators,
            sort_keys=sort_keys,
        )

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return environment.from_string(source)
