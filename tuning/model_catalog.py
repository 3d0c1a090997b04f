"""The published architecture of Google's Gemma checkpoints, for estimates without the Hub.

Submit estimates a job's GPU memory from the base model's config.json (tuning/placement.py).
A `gs://` model's config is read from its folder; a Hub id of one of Google's Gemma
checkpoints is looked up here, because the functions do not fetch from the Hub (gated repos
need the caller's token, and a submit should not wait on another service). Each entry holds
the architecture keys of the model's config.json as published at `source` (keys the Hub
config leaves out are left out too: transformers fills them in, and so does
tuning.estimates), the model card's size, and keras-hub's exact count where it counts the
same vocabulary (https://github.com/keras-team/keras-hub/blob/master/keras_hub/src/models/gemma3/gemma3_presets.py).
The instruction-tuned (-it) and pretrained (-pt, or no suffix) checkpoints of a size share
their architecture.
"""

from __future__ import annotations

import re
from typing import Any

CATALOG: dict[str, dict[str, Any]] = {
    "gemma-3-270m": {
        "source": "https://huggingface.co/google/gemma-3-270m-it/blob/main/config.json",
        "published_parameters": 270000000.0,
        "exact_parameters": 268098176,
        "config": {
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "hidden_size": 640,
            "intermediate_size": 2048,
            "num_hidden_layers": 18,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "vocab_size": 262144,
            "sliding_window": 512,
            "max_position_embeddings": 32768,
        },
    },
    "gemma-3-1b": {
        "source": "https://huggingface.co/google/gemma-3-1b-it/blob/main/config.json",
        "published_parameters": 1000000000.0,
        "exact_parameters": 999885952,
        "config": {
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "hidden_size": 1152,
            "intermediate_size": 6912,
            "num_hidden_layers": 26,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "vocab_size": 262144,
            "sliding_window": 512,
            "sliding_window_pattern": 6,
            "max_position_embeddings": 32768,
        },
    },
    "gemma-3-4b": {
        "source": "https://huggingface.co/google/gemma-3-4b-it/blob/main/config.json",
        "published_parameters": 4300000000.0,
        "exact_parameters": 4300079472,
        "config": {
            "architectures": ["Gemma3ForConditionalGeneration"],
            "model_type": "gemma3",
            "mm_tokens_per_image": 256,
            "text_config": {
                "model_type": "gemma3_text",
                "hidden_size": 2560,
                "intermediate_size": 10240,
                "num_hidden_layers": 34,
                "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                "sliding_window": 1024,
            },
            "vision_config": {
                "model_type": "siglip_vision_model",
                "hidden_size": 1152,
                "image_size": 896,
                "intermediate_size": 4304,
                "num_attention_heads": 16,
                "num_hidden_layers": 27,
                "patch_size": 14,
                "vision_use_head": False,
            },
        },
    },
    "gemma-3-12b": {
        "source": "https://huggingface.co/google/gemma-3-12b-it/blob/main/config.json",
        "published_parameters": 12200000000.0,
        "config": {
            "architectures": ["Gemma3ForConditionalGeneration"],
            "model_type": "gemma3",
            "mm_tokens_per_image": 256,
            "text_config": {
                "model_type": "gemma3_text",
                "hidden_size": 3840,
                "intermediate_size": 15360,
                "num_attention_heads": 16,
                "num_hidden_layers": 48,
                "num_key_value_heads": 8,
                "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                "sliding_window": 1024,
            },
            "vision_config": {
                "model_type": "siglip_vision_model",
                "hidden_size": 1152,
                "image_size": 896,
                "intermediate_size": 4304,
                "num_attention_heads": 16,
                "num_hidden_layers": 27,
                "patch_size": 14,
                "vision_use_head": False,
            },
        },
    },
    "gemma-3-27b": {
        "source": "https://huggingface.co/google/gemma-3-27b-it/blob/main/config.json",
        "published_parameters": 27400000000.0,
        "config": {
            "architectures": ["Gemma3ForConditionalGeneration"],
            "model_type": "gemma3",
            "mm_tokens_per_image": 256,
            "text_config": {
                "model_type": "gemma3_text",
                "head_dim": 128,
                "hidden_size": 5376,
                "intermediate_size": 21504,
                "num_attention_heads": 32,
                "num_hidden_layers": 62,
                "num_key_value_heads": 16,
                "query_pre_attn_scalar": 168,
                "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                "sliding_window": 1024,
            },
            "vision_config": {
                "model_type": "siglip_vision_model",
                "hidden_size": 1152,
                "image_size": 896,
                "intermediate_size": 4304,
                "num_attention_heads": 16,
                "num_hidden_layers": 27,
                "patch_size": 14,
                "vision_use_head": False,
            },
        },
    },
    "gemma-2-2b": {
        "source": "https://huggingface.co/google/gemma-2-2b-it/blob/main/config.json",
        "published_parameters": 2600000000.0,
        "config": {
            "architectures": ["Gemma2ForCausalLM"],
            "model_type": "gemma2",
            "hidden_size": 2304,
            "intermediate_size": 9216,
            "num_hidden_layers": 26,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 256,
            "vocab_size": 256000,
            "sliding_window": 4096,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
        },
    },
    "gemma-2-9b": {
        "source": "https://huggingface.co/google/gemma-2-9b-it/blob/main/config.json",
        "published_parameters": 9200000000.0,
        "config": {
            "architectures": ["Gemma2ForCausalLM"],
            "model_type": "gemma2",
            "hidden_size": 3584,
            "intermediate_size": 14336,
            "num_hidden_layers": 42,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 256,
            "vocab_size": 256000,
            "sliding_window": 4096,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
        },
    },
}

_GOOGLE_GEMMA = re.compile(r"^google/(gemma-[23]-[0-9]+[mb])(?:-(?:it|pt))?$", re.IGNORECASE)


def catalog_config(base_model_id: str) -> dict[str, Any] | None:
    """The published config.json keys of a Google Gemma checkpoint, or None if not listed."""
    match = _GOOGLE_GEMMA.match(base_model_id)
    entry = CATALOG.get(match.group(1).lower()) if match else None
    return dict(entry["config"]) if entry else None
