"""GPU tiers: what an operator may declare, and which tier a job's estimate picks."""

from __future__ import annotations

import json

import pytest

from tuning.errors import InvalidRequestError
from tuning.model_catalog import catalog_config
from tuning.placement import overflow_of_unestimated_job, place_job
from tuning.settings import ApiSettings, SettingsError
from tuning.spec import parse_train_request
from tuning.tiers import GIB, TierChoiceError, choose_tier, parse_tiers

BASE = {
    "PROJECT_ID": "demo",
    "GCS_CONFIG_BUCKET_NAME": "demo-configs",
    "GCS_DATA_BUCKET_NAME": "demo-data",
    "GCS_MODELS_BUCKET_NAME": "demo-models",
}
L4 = {
    "name": "l4",
    "engine": "cloudrun",
    "gpu_type": "nvidia-l4",
    "gpu_memory_gib": 22.4,
    "cloud_run_job": "trainer-l4",
    "max_concurrent_jobs": 4,
}
RTX = {
    "name": "rtx",
    "engine": "cloudrun",
    "gpu_type": "nvidia-rtx-pro-6000",
    "gpu_memory_gib": 95.5,
    "cloud_run_job": "trainer-rtx",
}
H100X8 = {
    "name": "h100x8",
    "engine": "vertex",
    "gpu_type": "NVIDIA_H100_80GB",
    "gpu_count": 8,
    "gpu_memory_gib": 79.6,
    "machine_type": "a3-highgpu-8g",
}
TIERS = parse_tiers([H100X8, L4, RTX])  # declared in any order


def config(model: str, method: str = "LoRA", tier: str = "auto"):
    data = {
        "processed_dataset_id": "ds",
        "training_config": {"base_model_id": model, "method": method, "compute": {"tier": tier}},
    }
    return parse_train_request(data).training_config


class NoStorage:
    def download_json(self, uri: str):
        raise AssertionError(f"a Hub id reads no bucket ({uri})")


@pytest.mark.parametrize(
    ("model", "method", "tier"),
    [
        ("google/gemma-3-1b-it", "LoRA", "l4"),
        ("google/gemma-3-27b-it", "QLoRA", "l4"),
        ("google/gemma-3-12b-it", "LoRA", "rtx"),
        ("google/gemma-3-27b-it", "LoRA", "rtx"),
        ("google/gemma-3-4b-it", "Full", "rtx"),
        ("google/gemma-3-27b-it", "Full", "h100x8"),  # ~16 B/param: only 8 sharded GPUs hold it
    ],
)
def test_auto_takes_the_smallest_tier_the_estimate_fits(model, method, tier):
    placement = place_job(config(model, method), tiers=TIERS, storage=NoStorage())

    assert placement.tier == tier
    assert placement.estimate_bytes is not None
    assert placement.estimate_bytes <= placement.gpu_memory_bytes
    assert placement.estimate is not None and sum(placement.estimate.values()) == (
        placement.estimate_bytes
    )
    assert placement.estimated_from == f"published config of {model}"


def test_a_named_tier_too_small_is_refused_with_the_estimate_and_the_tier_that_fits():
    with pytest.raises(InvalidRequestError) as raised:
        place_job(config("google/gemma-3-27b-it", "Full", "rtx"), tiers=TIERS, storage=NoStorage())

    assert raised.value.field == "training_config.compute.tier"
    assert "cannot hold the job: it needs about" in raised.value.message
    assert "GiB per GPU; tier h100x8 fits it" in raised.value.message


def test_a_job_no_tier_holds_is_refused_with_the_largest_tier():
    with pytest.raises(InvalidRequestError) as raised:
        place_job(
            config("google/gemma-3-27b-it", "Full"), tiers=parse_tiers([L4]), storage=NoStorage()
        )

    assert raised.value.field == "training_config.compute.tier"
    assert "no tier can hold the job: on the largest, l4 (1 x nvidia-l4" in raised.value.message


def test_an_unknown_tier_is_refused_naming_the_tiers():
    with pytest.raises(InvalidRequestError) as raised:
        place_job(config("google/gemma-3-1b-it", tier="tpu"), tiers=TIERS, storage=NoStorage())

    assert raised.value.message == "no tier 'tpu' here: use auto or one of l4, rtx, h100x8"


def test_a_model_without_a_known_config_goes_to_the_smallest_tier_unestimated():
    placement = place_job(config("someone/custom-gemma"), tiers=TIERS, storage=NoStorage())

    assert (placement.tier, placement.estimate_bytes, placement.estimated_from) == (
        "l4",
        None,
        None,
    )


def test_a_named_tier_is_kept_when_it_fits_even_if_a_smaller_one_would():
    placement = place_job(
        config("google/gemma-3-1b-it", tier="rtx"), tiers=TIERS, storage=NoStorage()
    )

    assert placement.tier == "rtx"


def test_the_choice_counts_per_gpu_so_sharding_matters():
    # 100 GiB of sharded state: no single GPU holds it, eight hold 12.5 GiB each.
    def needed(tier):
        return int(100 * GIB / tier.gpu_count)

    tier, per_gpu = choose_tier(TIERS, "auto", needed)

    assert tier.name == "h100x8" and per_gpu == int(12.5 * GIB)
    with pytest.raises(TierChoiceError):
        choose_tier(TIERS, "rtx", needed)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"method": "QLoRA"}, "method QLoRA"),
        ({"trainer_type": "grpo"}, "trainer_type grpo"),
        ({"provider": "unsloth"}, "provider unsloth"),
    ],
)
def test_what_trains_on_one_gpu_only_is_kept_off_multi_gpu_tiers(changes, named):
    def job(tier: str):
        data = {
            "processed_dataset_id": "ds",
            "training_config": {
                "base_model_id": "google/gemma-3-27b-it",
                "method": "LoRA",
                "compute": {"tier": tier},
            }
            | changes,
        }
        if changes.get("trainer_type") == "grpo":
            data["training_config"]["reward_config"] = {"functions": ["format"]}
        return parse_train_request(data).training_config

    named_tier, auto = job("h100x8"), job("auto")
    with pytest.raises(InvalidRequestError) as raised:
        place_job(named_tier, tiers=TIERS, storage=NoStorage())
    assert raised.value.field == "training_config.compute.tier"
    assert raised.value.message.startswith(f"{named} trains on one GPU; tier h100x8")
    # auto never picks the 8-GPU tier for it, even where only that one would hold it
    with pytest.raises(InvalidRequestError) as raised:
        place_job(auto, tiers=parse_tiers([H100X8]), storage=NoStorage())
    assert "every tier here has several" in raised.value.message
    assert place_job(auto, tiers=TIERS, storage=NoStorage()).gpu_count == 1


def test_lora_and_full_may_take_a_multi_gpu_tier():
    placement = place_job(
        config("google/gemma-3-1b-it", tier="h100x8"), tiers=TIERS, storage=NoStorage()
    )

    assert (placement.tier, placement.gpu_count) == ("h100x8", 8)


# --- what the operator declares ---------------------------------------------------------


def test_tiers_come_from_gpu_tiers_json():
    settings = ApiSettings.from_env({**BASE, "GPU_TIERS": json.dumps([L4, H100X8])})

    assert [tier.name for tier in settings.tiers] == ["l4", "h100x8"]
    assert settings.tier("h100x8").machine_type == "a3-highgpu-8g"


def test_without_gpu_tiers_the_deployment_has_its_one_cloud_run_tier():
    settings = ApiSettings.from_env(
        {**BASE, "TRAINER_JOB_NAME": "gemma-trainer", "MAX_CONCURRENT_JOBS": "3"}
    )

    (tier,) = settings.tiers
    assert (tier.name, tier.cloud_run_job, tier.max_concurrent_jobs) == (
        "default",
        "gemma-trainer",
        3,
    )
    assert (tier.gpu_type, tier.gpu_count) == ("nvidia-l4", 1)
    assert settings.tier(None) == tier  # a job recorded before tiers runs there


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([{**L4, "gpu_count": 2}], "Cloud Run gives one GPU per instance"),
        ([{**L4, "cloud_run_job": None}], "a cloudrun tier names its cloud_run_job"),
        ([{**H100X8, "machine_type": None}], "a vertex tier names its machine_type"),
        ([L4, {**RTX, "name": "l4"}], "names a tier twice: l4"),
        ([{**L4, "name": "auto"}], "'auto' is not a tier name"),
        ([{**L4, "name": "L4 GPUs"}], "tier 0 (L4 GPUs): name"),
        ([], "non-empty JSON list"),
    ],
)
def test_a_bad_tier_declaration_fails_at_start_naming_it(tiers, message):
    with pytest.raises(SettingsError) as raised:
        ApiSettings.from_env({**BASE, "GPU_TIERS": json.dumps(tiers)})

    assert "GPU_TIERS" in str(raised.value) and message in str(raised.value)


def test_grpo_is_estimated_on_prompt_plus_completion_and_its_reference_copy():
    from tuning.estimates import ModelShape
    from tuning.model_catalog import catalog_config
    from tuning.placement import estimate_for

    def grpo(**hyperparameters):
        data = {
            "processed_dataset_id": "ds",
            "training_config": {
                "base_model_id": "google/gemma-3-4b-it",
                "method": "Full",
                "trainer_type": "grpo",
                "reward_config": {"functions": ["format"]},
                "export_config": {"format": "adapter"},
                "hyperparameters": hyperparameters,
            },
        }
        return parse_train_request(data).training_config

    shape = ModelShape.from_config(catalog_config("google/gemma-3-4b-it"))
    (tier,) = parse_tiers([RTX])
    short, long = (
        estimate_for(shape, grpo(max_prompt_length=length), tier).total for length in (64, 900)
    )
    without, with_reference = (
        estimate_for(shape, grpo(beta=beta), tier).weights for beta in (0.0, 0.1)
    )

    assert short < long  # the prompt bound counts, not max_seq_length alone
    assert with_reference > without  # beta above 0 loads a second copy for the KL term


def unestimated(model: str, method: str):
    job = config(model, method)
    placement = place_job(job, tiers=TIERS, storage=NoStorage())
    assert placement.estimate_bytes is None  # submit did not know the shape
    return job, placement


def test_the_trainer_refuses_an_unestimated_job_its_tier_cannot_hold_from_its_config():
    job, placement = unestimated("someone/gemma-3-27b-finetune", "Full")
    shape_of_27b = catalog_config("google/gemma-3-27b-it")

    message = overflow_of_unestimated_job(job, shape_of_27b, placement)

    assert message is not None
    assert "tier l4 (1 x nvidia-l4) holds 22.4 GiB" in message
    assert "training_config.compute.tier" in message and "QLoRA" in message
    needed = float(message.split("about ")[1].split(" GiB")[0])
    assert needed > 22.4


def test_the_trainer_lets_an_unestimated_job_that_fits_its_tier_run():
    job, placement = unestimated("someone/gemma-3-270m-finetune", "LoRA")

    assert (
        overflow_of_unestimated_job(job, catalog_config("google/gemma-3-270m-it"), placement)
        is None
    )


def test_the_trainer_does_not_second_guess_an_estimate_made_at_submit():
    job = config("google/gemma-3-27b-it", "QLoRA")
    placement = place_job(job, tiers=TIERS, storage=NoStorage())
    assert placement.estimate_bytes is not None
    full = config("google/gemma-3-27b-it", "Full")  # far beyond l4, but submit placed it

    assert (
        overflow_of_unestimated_job(full, catalog_config("google/gemma-3-27b-it"), placement)
        is None
    )


def test_a_config_without_a_readable_shape_is_left_to_the_gpu():
    job, placement = unestimated("someone/odd-model", "Full")

    assert overflow_of_unestimated_job(job, {"model_type": "mystery"}, placement) is None
