"""Independent computations the trainer's reports are checked against (full logits, by hand)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def as_text(content: Any) -> str:
    return content if isinstance(content, str) else "\n".join(part["text"] for part in content)


def reference_eval(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> tuple[float, float]:
    """(mean NLL per target token, token accuracy) over assistant tokens, labels shifted by one."""
    import torch
    from trl.chat_template_utils import get_training_chat_template

    template = get_training_chat_template(tokenizer) or tokenizer.chat_template
    nll, correct, count = 0.0, 0, 0
    model.eval()
    for row in rows:
        messages = [{"role": m["role"], "content": as_text(m["content"])} for m in row["messages"]]
        encoded = tokenizer.apply_chat_template(
            messages,
            chat_template=template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids = torch.tensor([encoded["input_ids"]])
        labels = torch.where(torch.tensor(encoded["assistant_masks"]).bool(), ids[0], -100)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        predicted, target = logits[:-1], labels[1:]  # position t predicts token t+1
        valid = target != -100
        log_probs = torch.log_softmax(predicted[valid], dim=-1)
        nll -= log_probs.gather(1, target[valid][:, None]).sum().item()
        correct += int((predicted[valid].argmax(-1) == target[valid]).sum())
        count += int(valid.sum())
    return nll / count, correct / count


def load_causal_lm(directory: Path, dtype: str = "float32") -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype))


def load_with_adapter(base_dir: Path, adapter_dir: Path, dtype: str = "float32") -> Any:
    import torch
    from peft import PeftModel

    base = load_causal_lm(base_dir, dtype)
    if dtype != "float32":
        base = base.to(torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir)
