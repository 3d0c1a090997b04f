"""Who may train on a tier (`allowed_callers`, review finding F3): auto picks among the
caller's tiers only, and a refusal names only those."""

from __future__ import annotations

import pytest

from tests.unit.test_tiers import H100X8, L4, RTX, NoStorage, config
from tuning.errors import InvalidRequestError
from tuning.placement import TIER_FIELD, place_job
from tuning.tiers import parse_tiers, tiers_open_to

CAROL = "carol@example.com"
ANN = "ann@example.com"
# The 8 x H100 tier is kept for Carol; the others are open to every caller (the default).
TIERS = parse_tiers([L4, RTX, {**H100X8, "allowed_callers": [CAROL]}])


def refusal(owner: str | None, model: str, method: str = "LoRA", tier: str = "auto") -> str:
    with pytest.raises(InvalidRequestError) as raised:
        place_job(config(model, method, tier), tiers=TIERS, storage=NoStorage(), owner=owner)
    assert raised.value.field == TIER_FIELD
    return raised.value.message


def test_a_tier_is_open_to_every_caller_unless_the_operator_lists_some() -> None:
    l4, rtx, h100 = TIERS

    assert l4.allowed_callers == ("*",)
    assert l4.admits(ANN) and l4.admits(None)
    assert h100.admits(CAROL)
    assert not h100.admits(ANN) and not h100.admits(None)  # a job naming nobody is nobody
    assert tiers_open_to(ANN, TIERS) == (l4, rtx)


@pytest.mark.parametrize(
    "callers",
    [[], ["ann example.com"], [""], ["x" * 321]],
    ids=["empty", "whitespace", "blank", "too-long"],
)
def test_allowed_callers_must_be_identities_or_every_caller(callers: list[str]) -> None:
    with pytest.raises(ValueError, match="allowed_callers"):
        parse_tiers([{**L4, "allowed_callers": callers}])


def test_auto_places_only_on_tiers_open_to_the_caller() -> None:
    carols = place_job(
        config("google/gemma-3-27b-it", "Full"), tiers=TIERS, storage=NoStorage(), owner=CAROL
    )

    message = refusal(ANN, "google/gemma-3-27b-it", "Full")

    assert carols.tier == "h100x8"
    assert message.startswith("no tier can hold the job: on the largest, rtx ")
    assert "h100" not in message.lower()


def test_a_closed_tier_is_refused_as_if_it_did_not_exist() -> None:
    closed = refusal(ANN, "google/gemma-3-1b-it", tier="h100x8")
    unknown = refusal(ANN, "google/gemma-3-1b-it", tier="nosuch")

    assert closed == unknown.replace("nosuch", "h100x8")
    assert closed == "no tier 'h100x8' here: use auto or one of l4, rtx"


def test_a_hint_at_a_larger_tier_names_only_the_callers_tiers() -> None:
    anns = refusal(ANN, "google/gemma-3-27b-it", "Full", tier="rtx")
    carols = refusal(CAROL, "google/gemma-3-27b-it", "Full", tier="rtx")

    assert anns.endswith("; no tier here fits it")
    assert carols.endswith("; tier h100x8 fits it (or use auto)")


def test_a_caller_without_any_open_tier_is_told_to_ask_the_operator() -> None:
    only_carols = parse_tiers([{**L4, "allowed_callers": [CAROL]}])

    with pytest.raises(InvalidRequestError) as raised:
        place_job(config("google/gemma-3-1b-it"), tiers=only_carols, storage=NoStorage(), owner=ANN)

    assert raised.value.field == TIER_FIELD
    assert "allowed_callers" in raised.value.message
    assert "l4" not in raised.value.message
