"""GPU time and cost estimates per tier: the tables, the arithmetic and what overrides what."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tuning import pricing
from tuning.jobs import DatasetStats, JobRecord, Metrics, Placement, Progress
from tuning.pricing import (
    FROM_HISTORY,
    HISTORY_MIN_JOBS,
    OPERATOR_SOURCE,
    GpuPricing,
    MeasuredThroughput,
    ThroughputKey,
    estimate_costs,
    flops_per_token,
    measured_tokens_per_second,
    parameters_of,
    parse_gpu_pricing,
)
from tuning.settings import ServiceSettings, SettingsError
from tuning.tiers import CLOUD_RUN_GPU_MEMORY_GIB, VERTEX_GPU_MEMORY_GIB, Engine, GpuTier

N = 1_000_000_000
MODEL = "google/gemma-3-1b-it"
L4 = GpuTier(
    name="default",
    engine=Engine.CLOUD_RUN,
    gpu_type="nvidia-l4",
    gpu_memory_gib=22.4,
    cloud_run_job="trainer",
)
H100 = GpuTier(
    name="h100",
    engine=Engine.VERTEX,
    gpu_type="NVIDIA_H100_80GB",
    gpu_count=8,
    gpu_memory_gib=79.6,
    machine_type="a3-highgpu-8g",
)
EVERY_GPU_TYPE = set(CLOUD_RUN_GPU_MEMORY_GIB) | set(VERTEX_GPU_MEMORY_GIB)


class History:
    """Aggregates by key, as tuning/gcp/throughput.py keeps them in Firestore."""

    def __init__(self, measured: dict[ThroughputKey, MeasuredThroughput]) -> None:
        self.measured = measured

    def lookup(self, key: ThroughputKey) -> MeasuredThroughput | None:
        return self.measured.get(key)


def estimate(*tiers: GpuTier, **changes):
    arguments = {
        "parameters": N,
        "method": "LoRA",
        "trainer_type": "sft",
        "base_model_id": MODEL,
        "tokens": 36_000_000,
        **changes,
    }
    return estimate_costs(tiers or (L4,), **arguments)


# The tables ------------------------------------------------------------------------------------


def test_every_gpu_type_a_tier_can_use_has_a_price_entry_and_a_peak_with_sources():
    assert set(pricing.PRICES) == EVERY_GPU_TYPE
    assert set(pricing.PEAK_COMPUTE) == EVERY_GPU_TYPE
    for gpu_type, price in pricing.PRICES.items():
        assert "https://" in price.source, gpu_type
        assert price.region == "us-central1"
        assert datetime.strptime(price.read_on, "%Y-%m-%d")
        if price.usd_per_gpu_hour is None:
            assert price.source.startswith("not found"), gpu_type
    for gpu_type, peak in pricing.PEAK_COMPUTE.items():
        assert "https://www.nvidia.com/" in peak.source, gpu_type
        assert peak.bf16_tflops > 0


def test_a_figure_not_found_gives_a_time_without_a_cost_and_says_so():
    (cost,) = estimate(H100)

    assert cost.estimated_seconds is not None
    assert cost.estimated_cost_usd is None and cost.usd_per_gpu_hour is None
    assert cost.price_source.startswith("not found: https://cloud.google.com/vertex-ai/pricing")


def test_flops_per_token_by_method_and_trainer_type():
    assert flops_per_token(N, method="Full", trainer_type="sft") == 6 * N
    assert flops_per_token(N, method="LoRA", trainer_type="sft") == 4 * N
    assert flops_per_token(N, method="QLoRA", trainer_type="sft") == pytest.approx(5.6 * N)
    # Both answers of a pair; DPO adds the reference's forward over both.
    assert flops_per_token(N, method="LoRA", trainer_type="orpo") == 8 * N
    assert flops_per_token(N, method="LoRA", trainer_type="dpo") == 12 * N
    assert flops_per_token(N, method="LoRA", trainer_type="grpo") == 40 * N
    with pytest.raises(ValueError, match="method"):
        flops_per_token(N, method="Adapter", trainer_type="sft")


def test_the_table_throughput_is_peak_times_utilisation_over_flops_per_token():
    (cost,) = estimate(L4, method="Full")

    expected = 121e12 * pricing.MODEL_FLOPS_UTILIZATION / (6 * N)
    assert cost.tokens_per_second == pytest.approx(expected, rel=1e-6)
    assert cost.throughput_source.startswith("table: 121 bf16 TFLOPs (https://www.nvidia.com/")
    assert "6N FLOPs per token" in cost.throughput_source


def test_a_multi_gpu_tier_scales_by_its_gpus_at_the_stated_efficiency():
    (one,) = estimate(H100.model_copy(update={"gpu_count": 1}))
    (eight,) = estimate(H100)

    assert eight.tokens_per_second == pytest.approx(
        one.tokens_per_second * 8 * pricing.MULTI_GPU_EFFICIENCY, rel=1e-6
    )
    assert "8 GPUs at 0.85 efficiency" in eight.throughput_source


def test_parameters_come_from_the_model_catalog():
    assert parameters_of("google/gemma-3-1b-it") == 999_885_952  # tuning.model_catalog's count
    assert parameters_of("gs://bucket/base_models/mine/") is None


# Arithmetic and overrides --------------------------------------------------------------------


def test_cost_is_hours_times_price_per_gpu_hour_times_gpus():
    prices = {
        "nvidia-l4": GpuPricing(usd_per_gpu_hour=2.0, tokens_per_second=10_000),
        "NVIDIA_H100_80GB": GpuPricing(usd_per_gpu_hour=10.0, tokens_per_second=10_000),
    }

    l4, h100 = estimate(L4, H100, prices=prices)

    assert (l4.tokens_per_second, l4.estimated_seconds, l4.estimated_cost_usd) == (
        10_000,
        3600.0,
        2.0,
    )
    rate = 10_000 * 8 * pricing.MULTI_GPU_EFFICIENCY
    assert h100.tokens_per_second == pytest.approx(rate)
    assert h100.estimated_seconds == pytest.approx(36_000_000 / rate, abs=0.1)
    assert h100.estimated_cost_usd == pytest.approx(36_000_000 / rate / 3600 * 10.0 * 8, rel=1e-3)
    assert h100.throughput_source == h100.price_source == OPERATOR_SOURCE


def test_the_operator_price_replaces_the_table_price_and_keeps_the_table_throughput():
    (table,) = estimate()
    (priced,) = estimate(prices={"nvidia-l4": GpuPricing(usd_per_gpu_hour=0.5)})

    assert table.usd_per_gpu_hour == pricing.PRICES["nvidia-l4"].usd_per_gpu_hour
    assert "read 2026-12-04" in table.price_source and "us-central1" in table.price_source
    assert priced.usd_per_gpu_hour == 0.5 and priced.price_source == OPERATOR_SOURCE
    assert priced.tokens_per_second == table.tokens_per_second
    assert priced.throughput_source.startswith("table:")


def key(**changes: str) -> ThroughputKey:
    fields = {"tier": "default", "base_model_id": MODEL, "method": "LoRA", "trainer_type": "sft"}
    return ThroughputKey(**{**fields, **changes})


def test_history_is_used_from_k_jobs_and_beats_the_operator_and_the_table():
    prices = {"nvidia-l4": GpuPricing(tokens_per_second=1000)}
    short = History({key(): MeasuredThroughput(jobs=HISTORY_MIN_JOBS - 1, tokens_per_second=2500)})
    enough = History({key(): MeasuredThroughput(jobs=HISTORY_MIN_JOBS, tokens_per_second=2500)})

    (before,) = estimate(prices=prices, history=short)
    (after,) = estimate(prices=prices, history=enough)

    assert (before.tokens_per_second, before.throughput_source) == (1000, OPERATOR_SOURCE)
    assert (after.tokens_per_second, after.throughput_source) == (2500, FROM_HISTORY)
    assert after.estimated_seconds == 36_000_000 / 2500


def test_history_never_speaks_for_a_gs_snapshot_which_may_be_one_teams():
    snapshot = "gs://models/base_models/team-a/gemma/"
    history = History(
        {key(base_model_id=snapshot): MeasuredThroughput(jobs=50, tokens_per_second=2500)}
    )

    (cost,) = estimate(history=history, base_model_id=snapshot)

    assert cost.throughput_source.startswith("table:")


def test_history_is_kept_per_tier_model_method_and_trainer_type():
    history = History({key(method="QLoRA"): MeasuredThroughput(jobs=50, tokens_per_second=1.0)})

    (cost,) = estimate(history=history)

    assert cost.throughput_source.startswith("table:")


def test_what_the_estimate_returns_names_no_job_owner_or_count():
    history = History({key(): MeasuredThroughput(jobs=4711, tokens_per_second=2500)})

    (cost,) = estimate(history=history)
    document = cost.to_dict()

    assert json.loads(json.dumps(document)) == document
    assert set(document) == {
        "tier",
        "gpu_type",
        "gpu_count",
        "tokens_per_second",
        "throughput_source",
        "estimated_seconds",
        "estimated_cost_usd",
        "usd_per_gpu_hour",
        "price_source",
    }
    assert document["throughput_source"] == "this deployment's completed jobs"
    assert "4711" not in json.dumps(document)


def test_a_gpu_type_without_figures_says_how_to_give_them():
    tier = L4.model_copy(update={"gpu_type": "nvidia-h9000"})

    (cost,) = estimate(tier)

    assert cost.tokens_per_second is None and cost.estimated_seconds is None
    assert cost.estimated_cost_usd is None
    assert "gpu_pricing" in cost.throughput_source and "gpu_pricing" in cost.price_source


# GPU_PRICING ----------------------------------------------------------------------------------

BASE_ENV = {
    "PROJECT_ID": "p",
    "GCS_CONFIG_BUCKET_NAME": "config",
    "GCS_DATA_BUCKET_NAME": "data",
    "GCS_MODELS_BUCKET_NAME": "models",
}


def test_settings_read_gpu_pricing_as_terraform_writes_it():
    # jsonencode of an object with an optional attribute left unset writes null.
    written = '{"nvidia-l4":{"tokens_per_second":null,"usd_per_gpu_hour":1.1}}'

    settings = ServiceSettings.from_env({**BASE_ENV, "GPU_PRICING": written})

    assert settings.gpu_pricing == {"nvidia-l4": GpuPricing(usd_per_gpu_hour=1.1)}
    assert ServiceSettings.from_env({**BASE_ENV, "GPU_PRICING": "{}"}).gpu_pricing == {}
    assert ServiceSettings.from_env(BASE_ENV).gpu_pricing == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"nvidia-l4": {}}', "set usd_per_gpu_hour, tokens_per_second or both"),
        ('{"nvidia-l4": {"usd_per_gpu_hour": -1}}', "usd_per_gpu_hour"),
        ('{"nvidia-l4": {"price": 1}}', "price"),
    ],
)
def test_bad_gpu_pricing_fails_at_start_naming_the_variable(value, message):
    with pytest.raises(SettingsError, match="GPU_PRICING") as raised:
        ServiceSettings.from_env({**BASE_ENV, "GPU_PRICING": value})
    assert message in str(raised.value)
    with pytest.raises(ValueError, match=message):
        parse_gpu_pricing(value)


def test_the_history_collection_sits_beside_the_jobs_unless_named():
    assert (
        ServiceSettings.from_env(BASE_ENV).throughput_collection_name == "training_jobs_throughput"
    )
    named = ServiceSettings.from_env({**BASE_ENV, "THROUGHPUT_COLLECTION": "rates"})
    assert named.throughput_collection_name == "rates"


# Measuring a completed job ---------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def finished(**fields) -> JobRecord:
    defaults = {
        "placement": Placement(tier="default", gpu_type="nvidia-l4", gpu_memory_bytes=1),
        "dataset_stats": DatasetStats(train_rows=100, train_tokens=50_000),
        "progress": Progress(step=200, total_steps=200, epoch=2.0),
        "metrics": Metrics(step=200, train_runtime=50.0, tokens_per_second=123.0),
    }
    return JobRecord(
        job_id="job-a",
        job_name="job-a",
        base_model_id=MODEL,
        processed_dataset_id="ds",
        created_at=T0,
        updated_at=T0,
        **{**defaults, **fields},
    )


def test_a_job_is_measured_in_dataset_tokens_per_second_of_its_last_run():
    # 50,000 tokens an epoch, 2 epochs in 200 steps: 500 tokens a step.
    assert measured_tokens_per_second(finished()) == 500 * 200 / 50.0
    # Resumed at step 150: its train_runtime covers the last 50 steps only.
    assert measured_tokens_per_second(finished(resumed_from_step=150)) == 500 * 50 / 50.0


def test_without_dataset_figures_only_sfts_own_rate_is_used():
    assert measured_tokens_per_second(finished(dataset_stats=None)) == 123.0
    assert measured_tokens_per_second(finished(dataset_stats=None, trainer_type="dpo")) is None
    assert measured_tokens_per_second(finished(metrics=Metrics(step=200))) is None
