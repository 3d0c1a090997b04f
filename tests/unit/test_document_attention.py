"""Document-wise attention: each document of a packed row sees itself only, as if alone."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from transformers import AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig  # noqa: E402

from trainer.document_attention import (  # noqa: E402
    document_attention_name,
    length_groups,
    register,
)

# Longer than the sliding window (8) and shorter: both paths of the sliding layers.
DOCUMENTS = (5, 13, 3, 21, 1)
# A packed row as training makes them: many documents of long-tailed lengths.
MANY_DOCUMENTS = (1, 2, 3, 5, 8, 13, 21, 34, 40, 47, 55, 60, 64, 90, 100, 7, 33, 120)


def tiny(family: str, attention: str) -> Any:
    common = {
        "vocab_size": 97,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "sliding_window": 8,
        "query_pre_attn_scalar": 8,
        "max_position_embeddings": 256,
    }
    config = (
        Gemma2Config(**common)
        if family == "gemma2"
        else Gemma3TextConfig(**common, layer_types=["sliding_attention", "full_attention"])
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()


def packed_row(documents: tuple[int, ...] = DOCUMENTS) -> tuple[Any, Any, Any]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 97, (1, sum(documents)), generator=generator)
    positions = torch.cat([torch.arange(length) for length in documents])[None]
    edges = torch.tensor([0, *torch.tensor(documents).cumsum(0).tolist()], dtype=torch.int32)
    return ids, positions, edges


def logits_alone(model: Any, ids: Any, documents: tuple[int, ...] = DOCUMENTS) -> list[Any]:
    pieces, start = [], 0
    for length in documents:
        pieces.append(model(input_ids=ids[:, start : start + length]).logits)
        start += length
    return pieces


def attention_kernel_calls(model: Any, **inputs: Any) -> int:
    """How many times a forward pass runs SDPA, or eager attention's softmax."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as run:
        model(**inputs)
    names = ("aten::scaled_dot_product_attention", "aten::softmax")
    return sum(event.count for event in run.key_averages() if event.key in names)


@pytest.mark.parametrize(("family", "attention"), [("gemma3", "sdpa"), ("gemma2", "eager")])
def test_each_packed_document_attends_to_itself_only(family: str, attention: str) -> None:
    register()
    reference = tiny(family, attention)
    ids, positions, edges = packed_row()
    alone = torch.cat(logits_alone(reference, ids), dim=1)
    model = tiny(family, attention)
    model.set_attn_implementation(document_attention_name(attention))

    with torch.no_grad():
        from_positions = model(input_ids=ids, position_ids=positions).logits
        from_edges = model(
            input_ids=ids,
            position_ids=positions,
            cu_seq_lens_q=edges,
            cu_seq_lens_k=edges,
            max_length_q=max(DOCUMENTS),
            max_length_k=max(DOCUMENTS),
        ).logits
        whole_row = model(input_ids=ids).logits  # no position ids: one long document

    torch.testing.assert_close(from_positions, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(from_edges, alone, atol=1e-5, rtol=1e-4)
    # The control: read as one document, the later documents see the earlier ones.
    assert (whole_row - alone).abs().max() > 1e-2


@pytest.mark.parametrize(("family", "attention"), [("gemma3", "sdpa"), ("gemma2", "eager")])
def test_a_single_document_longer_than_the_window_matches_the_base_kernel(
    family: str, attention: str
) -> None:
    register()
    reference = tiny(family, attention)
    model = tiny(family, attention)
    model.set_attn_implementation(document_attention_name(attention))
    ids = torch.randint(1, 97, (2, 30), generator=torch.Generator().manual_seed(2))

    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-5, rtol=1e-4
        )


def test_padded_batches_keep_the_base_kernels_mask() -> None:
    register()
    reference = tiny("gemma3", "sdpa")
    model = tiny("gemma3", "sdpa")
    model.set_attn_implementation(document_attention_name("sdpa"))
    ids = torch.randint(1, 97, (2, 20), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0  # the second row is right-padded after 12 tokens

    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask).logits
        theirs = reference(input_ids=ids, attention_mask=mask).logits

    torch.testing.assert_close(ours[0], theirs[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours[1, :12], theirs[1, :12], atol=1e-5, rtol=1e-4)


def test_gradients_flow_through_each_document() -> None:
    register()
    reference = tiny("gemma3", "sdpa").train()
    model = tiny("gemma3", "sdpa").train()
    model.set_attn_implementation(document_attention_name("sdpa"))
    ids, positions, _ = packed_row()

    sum(piece.sum() for piece in logits_alone(reference, ids)).backward()
    model(input_ids=ids, position_ids=positions).logits.sum().backward()

    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_documents_of_similar_length_share_a_group_longest_first() -> None:
    groups = length_groups([300, 5, 512, 200, 30, 400, 1, 290, 64])

    lengths = [[[300, 5, 512, 200, 30, 400, 1, 290, 64][i] for i in group] for group in groups]
    # Padded to its group's first length, no document costs more than twice its attention;
    # the short ones (up to 32 tokens) share a group whatever their lengths.
    assert lengths == [[512, 400], [300, 290], [200], [64], [30, 5, 1]]


@pytest.mark.parametrize(("family", "attention"), [("gemma3", "sdpa"), ("gemma2", "eager")])
def test_many_packed_documents_attend_alone_in_a_kernel_call_per_length_group(
    family: str, attention: str
) -> None:
    register()
    reference = tiny(family, attention)
    ids, positions, edges = packed_row(MANY_DOCUMENTS)
    alone = torch.cat(logits_alone(reference, ids, MANY_DOCUMENTS), dim=1)
    model = tiny(family, attention)
    model.set_attn_implementation(document_attention_name(attention))
    inputs = {"input_ids": ids, "position_ids": positions, "cu_seq_lens_q": edges}

    with torch.no_grad():
        packed = model(**inputs).logits
    calls = attention_kernel_calls(model, **inputs)

    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-4)
    # One call per layer and group, not per document: 18 documents make 4 groups.
    layers, groups = model.config.num_hidden_layers, len(length_groups(MANY_DOCUMENTS))
    assert (groups, calls) == (4, layers * groups)


def test_packed_rows_of_a_batch_each_keep_their_documents_apart() -> None:
    register()
    reference = tiny("gemma3", "sdpa")
    model = tiny("gemma3", "sdpa")
    model.set_attn_implementation(document_attention_name("sdpa"))
    rows = ((5, 13, 3, 21, 1), (30, 10, 3))  # 43 tokens each
    ids = torch.randint(1, 97, (2, 43), generator=torch.Generator().manual_seed(4))
    positions = torch.stack([torch.cat([torch.arange(n) for n in row]) for row in rows])

    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions).logits
        alone = [
            torch.cat(logits_alone(reference, ids[i : i + 1], row), dim=1)
            for i, row in enumerate(rows)
        ]

    torch.testing.assert_close(packed, torch.cat(alone), atol=1e-5, rtol=1e-4)


def test_gradients_flow_through_each_document_of_many_groups() -> None:
    register()
    reference = tiny("gemma3", "sdpa").train()
    model = tiny("gemma3", "sdpa").train()
    model.set_attn_implementation(document_attention_name("sdpa"))
    ids, positions, _ = packed_row(MANY_DOCUMENTS)

    sum(piece.sum() for piece in logits_alone(reference, ids, MANY_DOCUMENTS)).backward()
    model(input_ids=ids, position_ids=positions).logits.sum().backward()

    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-4, rtol=1e-3, msg=name)
