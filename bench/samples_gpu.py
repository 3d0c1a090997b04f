"""GPU time of the sample answers at the end of training (trainer/sample_generation.py).

Random-initialised Gemma 3 models of the published shapes (tuning/model_catalog.py; text
only), in bfloat16 with a rank-16 LoRA adapter on every linear layer, answer the prompts a
job would: once with the adapter (the tuned answers) and once inside `disable_adapter()` (the
base answers), through `generate_answers`, eight prompts a batch. Random weights never emit
an end-of-turn token, so every answer runs to `max_new_tokens`: the worst case, the bound the
request fields' descriptions state. Prints one JSON line per case and writes
`samples_gpu.json` to $OUT (else bench/results/).

    python3 bench/samples_gpu.py                 # on the accelerator machine
    python3 bench/samples_gpu.py --tiny          # the same code on CPU, tiny shapes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# (model, prompts, max_new_tokens): the defaults (5 samples + 16 scored rows, 64 tokens),
# then the most a request may ask for (16 + 64 prompts, 256 tokens).
CASES = [
    ("gemma-3-1b", 21, 64),
    ("gemma-3-4b", 21, 64),
    ("gemma-3-12b", 21, 64),
    ("gemma-3-27b", 21, 64),
    ("gemma-3-1b", 80, 256),
    ("gemma-3-27b", 80, 256),
]


class SafeDecoding:
    """The tiny tokenizer (real Gemma template and special tokens), decoding ids beyond its
    vocabulary (a random model's 262k outputs) as nothing."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._tokenizer(*args, **kwargs)

    def decode(self, ids: Any, **kwargs: Any) -> str:
        size = len(self._tokenizer)
        return str(self._tokenizer.decode([int(i) for i in ids if int(i) < size], **kwargs))


def text_config(name: str, tiny: bool) -> Any:
    from transformers import Gemma3TextConfig

    from tuning.model_catalog import CATALOG

    if tiny:
        return Gemma3TextConfig(
            vocab_size=4096,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
        )
    config = dict(CATALOG[name]["config"])
    config = dict(config.get("text_config", config))
    config.pop("architectures", None)
    config.pop("model_type", None)
    return Gemma3TextConfig(**config)


def prompts(count: int) -> list[Any]:
    from trainer.samples import request_prompt

    words = ["apple", "river", "stone", "cloud", "ember", "frost", "maple", "ocean"]
    return [
        request_prompt(
            f"Question {i}: in two sentences, what colour is {words[i % 8]} and why is "
            f"{words[(i * 3) % 8]} usually described as {words[(i * 5) % 8]}?"
        )
        for i in range(count)
    ]


def run_case(name: str, count: int, new_tokens: int, tokenizer: Any, tiny: bool) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.sample_generation import generate_answers
    from trainer.samples import MAX_PROMPT_TOKENS

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    started = time.monotonic()
    with device:
        model = AutoModelForCausalLM.from_config(
            text_config(name, tiny), dtype=torch.bfloat16 if cuda else torch.float32
        )
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0)
    )
    model.train()  # as the trainer leaves it
    built = time.monotonic() - started
    batch = prompts(count)
    timings = {}
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    for which in ("tuned", "base"):
        started = time.monotonic()
        if which == "base":
            with model.disable_adapter():
                answers = generate_answers(
                    model,
                    tokenizer,
                    batch,
                    max_new_tokens=new_tokens,
                    prompt_tokens=MAX_PROMPT_TOKENS,
                )
        else:
            answers = generate_answers(
                model, tokenizer, batch, max_new_tokens=new_tokens, prompt_tokens=MAX_PROMPT_TOKENS
            )
        if cuda:
            torch.cuda.synchronize()
        timings[which] = round(time.monotonic() - started, 2)
    result = {
        "model": name if not tiny else f"tiny ({name})",
        "prompts": count,
        "max_new_tokens": new_tokens,
        "batches": -(-count // 8),
        "seconds_tuned": timings["tuned"],
        "seconds_base": timings["base"],
        "seconds_total": round(timings["tuned"] + timings["base"], 2),
        "answers": len(answers),
        "model_build_seconds": round(built, 1),
    }
    if cuda:
        result["generation_peak_extra_gib"] = round(
            (torch.cuda.max_memory_allocated() - before) / 2**30, 2
        )
        result["gpu"] = torch.cuda.get_device_name()
    del model
    if cuda:
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (a dry run)")
    parser.add_argument("--only", help="run the cases of this model only")
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoTokenizer

    from trainer.tiny import build_tiny_gemma

    if not args.tiny and not torch.cuda.is_available():
        print("bench/samples_gpu.py: no CUDA GPU; use --tiny for the CPU dry run", file=sys.stderr)
        return 2
    snapshot = build_tiny_gemma(Path(tempfile.mkdtemp()) / "tiny", family="gemma3")
    tokenizer = SafeDecoding(AutoTokenizer.from_pretrained(snapshot))
    out = Path(os.environ.get("OUT") or Path(__file__).parent / "results")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    cases = CASES[:1] + CASES[4:5] if args.tiny else CASES
    for name, count, new_tokens in cases:
        if args.only and name != args.only:
            continue
        result = run_case(name, count, new_tokens, tokenizer, args.tiny)
        print(json.dumps(result), flush=True)
        results.append(result)
        (out / "samples_gpu.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
