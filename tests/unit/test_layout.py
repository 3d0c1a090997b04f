"""GCS layout: seed-compatible paths, `/`-terminated prefixes, and refused identifiers."""

from __future__ import annotations

import pytest

from tuning.errors import InvalidRequestError
from tuning.layout import StorageLayout, gcs_uri, parse_gcs_uri
from tuning.spec import GgufQuantization

LAYOUT = StorageLayout(data_bucket="ddd", config_bucket="ccc", models_bucket="mmm")

BAD_IDS = [
    "",
    "..",
    ".",
    "../job2",
    "job1/../job2",
    "a/b",
    "job1/",
    "/job1",
    "x" * 129,
    "-leading-dash",
    "_leading_underscore",
    "with space",
    "job1\n",
    "dot.ted",
    "per%2fcent",
    "ünïcode",
]


def all_paths(job_id: str) -> list[str]:
    return [
        *LAYOUT.job_prefixes(job_id),
        LAYOUT.config_uri(job_id),
        LAYOUT.gguf_uri(job_id, "q8_0"),
        LAYOUT.checkpoint_prefix(job_id, 10),
        LAYOUT.dataset_prefix(job_id),
    ]


def test_paths_match_the_seed_service():
    assert LAYOUT.dataset_prefix("ds") == "gs://ddd/processed_datasets/ds/"
    assert LAYOUT.config_uri("job1") == "gs://ccc/configs/job1.json"
    assert LAYOUT.adapter_prefix("job1") == "gs://mmm/trained_adapters/job1/"
    assert LAYOUT.merged_prefix("job1") == "gs://mmm/merged_models/job1/"
    assert LAYOUT.gguf_prefix("job1") == "gs://mmm/gguf_models/job1/"
    assert LAYOUT.gguf_uri("job1", "q8_0") == "gs://mmm/gguf_models/job1/model-q8_0.gguf"


@pytest.mark.parametrize("quantization", list(GgufQuantization))
def test_gguf_file_is_named_after_its_quantization(quantization: GgufQuantization):
    uri = LAYOUT.gguf_uri("job1", quantization)

    assert uri == f"gs://mmm/gguf_models/job1/model-{quantization.value}.gguf"
    assert uri == LAYOUT.gguf_uri("job1", quantization.value)


def test_unknown_quantization_is_refused():
    with pytest.raises(ValueError, match="q3"):
        LAYOUT.gguf_uri("job1", "q3")


def test_checkpoints_live_under_the_job_checkpoint_prefix():
    prefix = LAYOUT.checkpoint_prefix("job1", 250)

    assert prefix == "gs://mmm/checkpoints/job1/checkpoint-250/"
    assert prefix.startswith(LAYOUT.checkpoints_prefix("job1"))


def test_negative_checkpoint_step_is_refused():
    with pytest.raises(ValueError, match="negative"):
        LAYOUT.checkpoint_prefix("job1", -1)


def test_every_prefix_ends_with_a_slash():
    prefixes = [
        *LAYOUT.job_prefixes("job1"),
        LAYOUT.dataset_prefix("ds"),
        LAYOUT.checkpoints_prefix("job1"),
        LAYOUT.checkpoint_prefix("job1", 0),
    ]

    assert all(prefix.endswith("/") for prefix in prefixes)


def test_job_prefixes_cover_adapter_merged_gguf_checkpoints_and_evaluations():
    assert LAYOUT.job_prefixes("job1") == [
        "gs://mmm/trained_adapters/job1/",
        "gs://mmm/merged_models/job1/",
        "gs://mmm/gguf_models/job1/",
        "gs://mmm/checkpoints/job1/",
        "gs://mmm/evaluations/job1/",
    ]


def test_job_files_are_under_the_job_prefixes():
    prefixes = LAYOUT.job_prefixes("job1")

    for path in [
        LAYOUT.gguf_uri("job1", "f16"),
        LAYOUT.checkpoint_prefix("job1", 3),
        LAYOUT.samples_uri("job1"),
        LAYOUT.base_answers_uri("job1"),
    ]:
        assert any(path.startswith(prefix) for prefix in prefixes)


@pytest.mark.parametrize(("mine", "other"), [("job1", "job10"), ("job1", "job1_b"), ("a", "a-b")])
def test_prefixes_of_a_job_are_not_prefixes_of_another_jobs_paths(mine: str, other: str):
    prefixes = LAYOUT.job_prefixes(mine)

    touched = [path for path in all_paths(other) for prefix in prefixes if path.startswith(prefix)]

    assert touched == []


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_unsafe_job_id_is_refused_everywhere(bad: str):
    builders = [
        LAYOUT.config_uri,
        LAYOUT.adapter_prefix,
        LAYOUT.merged_prefix,
        LAYOUT.gguf_prefix,
        LAYOUT.checkpoints_prefix,
        LAYOUT.job_prefixes,
        lambda job_id: LAYOUT.gguf_uri(job_id, "q8_0"),
        lambda job_id: LAYOUT.checkpoint_prefix(job_id, 1),
    ]

    for build in builders:
        with pytest.raises(InvalidRequestError) as caught:
            build(bad)
        assert caught.value.field == "job_id"


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_unsafe_dataset_id_is_refused(bad: str):
    with pytest.raises(InvalidRequestError) as caught:
        LAYOUT.dataset_prefix(bad)

    assert caught.value.field == "processed_dataset_id"


def test_longest_allowed_id_is_accepted():
    job_id = "j" * 128

    assert LAYOUT.adapter_prefix(job_id) == f"gs://mmm/trained_adapters/{job_id}/"


def test_non_string_id_is_refused():
    with pytest.raises(InvalidRequestError):
        LAYOUT.adapter_prefix(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("gs://bucket/a/b.txt", ("bucket", "a/b.txt")),
        ("gs://bucket/prefix/", ("bucket", "prefix/")),
        ("gs://bucket", ("bucket", "")),
        ("gs://bucket/", ("bucket", "")),
    ],
)
def test_parse_gcs_uri_splits_bucket_and_path(uri: str, expected: tuple[str, str]):
    assert parse_gcs_uri(uri) == expected


@pytest.mark.parametrize("uri", ["s3://bucket/x", "bucket/x", "gs://", "gs:///x", "GS://b/x"])
def test_parse_gcs_uri_refuses_other_schemes_and_missing_bucket(uri: str):
    with pytest.raises(InvalidRequestError, match=r"gs://|bucket"):
        parse_gcs_uri(uri)


def test_built_paths_parse_back_to_their_bucket():
    assert parse_gcs_uri(LAYOUT.gguf_uri("job1", "q8_0")) == (
        "mmm",
        "gguf_models/job1/model-q8_0.gguf",
    )
    assert parse_gcs_uri(LAYOUT.dataset_prefix("ds"))[0] == "ddd"
    assert parse_gcs_uri(LAYOUT.config_uri("job1"))[0] == "ccc"
    assert gcs_uri("bbb", "x/") == "gs://bbb/x/"


@pytest.mark.parametrize(
    "uri",
    [
        "gs://bbb/a/../c",
        "gs://bbb/a/./c",
        "gs://bbb/a//c",
        "gs://bbb//a",
        "gs://bbb/..",
        "gs://bbb/a//",
    ],
)
def test_parse_gcs_uri_refuses_empty_and_dot_segments(uri: str):
    with pytest.raises(InvalidRequestError, match="segment"):
        parse_gcs_uri(uri)


@pytest.mark.parametrize(
    "uri", ["gs://b-1", "gs://b-1/", "gs://b-1/a/", "gs://b-1/a/b", "gs://b-1/a.b/.c"]
)
def test_parse_gcs_uri_accepts_a_bucket_and_one_trailing_slash(uri: str):
    assert parse_gcs_uri(uri)[0] == "b-1"
