"""The `make run` demo proves it learned (issue 18, point 5): its tiny Gemma, built as the
stack builds it, trained with the demo's own request, answers every eval question (phrasings it
never trained on) with the right colour, and the model as loaded answers none."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainer.harness import TrainerStack, to_jsonl
from trainer.main import main
from tuning.events import CompletedEvent
from tuning.local.demo import SAMPLES, VOCABULARY_WORDS, demo_dataset_splits, demo_request
from tuning.samples import decode_lines

# 480 steps: about 12 s on two idle cores; a busy shared machine can take ten times that.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.tiny import build_tiny_gemma

    out = tmp_path_factory.mktemp("models") / "tiny-gemma3-demo"
    return build_tiny_gemma(out, llama_cpp_layers=True, words=VOCABULARY_WORDS)


def test_the_demo_job_answers_its_eval_questions_right(
    stack: TrainerStack, demo_model: Path
) -> None:
    splits = demo_dataset_splits()
    stack.upload_dataset(
        "demo", {f"{split}.jsonl": to_jsonl(rows) for split, rows in splits.items()}
    )
    job_id = stack.submit(demo_request(stack.upload_model(demo_model, "tiny-demo"), "demo"))

    assert main(settings=stack.settings(job_id), services=stack.services(job_id)) == 0

    completed = stack.pull_events(job_id)[-1]
    assert isinstance(completed, CompletedEvent), completed
    score = completed.payload.metrics.eval_scores["exact_match"]
    assert (score.base, score.tuned, score.rows) == (0.0, 1.0, len(splits["eval"]))
    samples = decode_lines(stack.storage.download_bytes(completed.payload.artifacts.samples_path))
    shown = samples[:SAMPLES]
    assert [s.tuned_answer for s in shown] == [s.reference for s in shown]
    assert all(s.base_answer != s.reference for s in shown)
    assert len({s.prompt.split()[-1] for s in shown}) == SAMPLES  # three different animals
