"""The training samplers' order depends on the seed and the epoch only, never the global RNG."""

from __future__ import annotations

import torch

from trainer.sampling import SeededLengthGroupedSampler, SeededRandomSampler


def orders(sampler: SeededRandomSampler | SeededLengthGroupedSampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    torch.manual_seed(epoch * 7 + 1)  # whatever the global RNG holds, as in a fresh process
    return list(sampler)


def test_an_epochs_order_is_the_same_in_any_process_state() -> None:
    for make in (
        lambda: SeededRandomSampler(40, seed=7),
        lambda: SeededLengthGroupedSampler([i % 9 + 1 for i in range(40)], 4, seed=7),
    ):
        first, second = make(), make()
        torch.manual_seed(123)
        assert orders(first, 1) == orders(second, 1)
        assert sorted(orders(first, 2)) == list(range(40))  # a permutation
        assert orders(first, 1) != orders(first, 2)  # each epoch shuffles anew


def test_another_seed_gives_another_order() -> None:
    assert orders(SeededRandomSampler(40, seed=7), 0) != orders(SeededRandomSampler(40, seed=8), 0)
