"""The CLI's pure parts: endpoint resolution, error messages, loss curves."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tuning.cli import main
from tuning.cli.client import ClientError, Endpoints, _decode
from tuning.cli.commands import loss_curves


def test_local_endpoints_name_the_caller_and_need_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SUBMIT", "STATUS", "DELETE"):
        monkeypatch.setenv(f"TUNING_{name}_URL", f"http://127.0.0.1:900{len(name)}/")
    monkeypatch.setenv("TUNING_CALLER", "alice@example.com")

    endpoints = Endpoints.from_environment(Path("/nonexistent.yaml"))

    assert endpoints.submit_url == "http://127.0.0.1:9006"
    assert endpoints.caller == "alice@example.com"
    assert endpoints.use_id_token is False


def test_deployed_endpoints_use_id_tokens_and_no_caller_header(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "submit_url: https://submit-abc.a.run.app\n"
        "status_url: https://status-abc.a.run.app\n"
        "delete_url: https://delete-abc.a.run.app\n"
    )
    for name in ("SUBMIT", "STATUS", "DELETE"):
        monkeypatch.delenv(f"TUNING_{name}_URL", raising=False)

    endpoints = Endpoints.from_environment(config)

    assert endpoints.use_id_token is True
    assert endpoints.caller is None


def test_missing_endpoint_says_which_variable_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNING_SUBMIT_URL", raising=False)

    with pytest.raises(ClientError, match="TUNING_SUBMIT_URL"):
        Endpoints.from_environment(Path("/nonexistent.yaml"))


def test_api_errors_become_messages_naming_the_field() -> None:
    response = requests.Response()
    response.status_code = 422
    response._content = (
        b'{"error": {"code": "invalid_argument", "message": "bad rank", '
        b'"field": "training_config.hyperparameters.lora_rank"}}'
    )

    with pytest.raises(ClientError) as raised:
        _decode(response)

    assert raised.value.status == 422
    assert "bad rank" in str(raised.value)
    assert "training_config.hyperparameters.lora_rank" in str(raised.value)


def test_loss_curves_take_the_latest_attempt_for_a_step() -> None:
    history = [
        {"type": "progress", "attempt": 0, "seq": 1, "payload": {"step": 10, "loss": 2.0}},
        {"type": "progress", "attempt": 0, "seq": 2, "payload": {"step": 20, "loss": 1.5}},
        {"type": "progress", "attempt": 1, "seq": 1, "payload": {"step": 20, "loss": 1.4}},
        {
            "type": "evaluation",
            "attempt": 1,
            "seq": 2,
            "payload": {"metrics": {"step": 20, "eval_loss": 1.6}},
        },
        {"type": "message", "attempt": 1, "seq": 3, "payload": {"text": "hi"}},
    ]

    train, evaluation = loss_curves(history)

    assert train == {10: 2.0, 20: 1.4}
    assert evaluation == {20: 1.6}


def test_unreachable_endpoint_is_a_clear_error_and_exit_code_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("SUBMIT", "STATUS", "DELETE"):
        monkeypatch.setenv(f"TUNING_{name}_URL", "http://127.0.0.1:9")  # discard port: refused

    code = main(["status", "some-job"])

    assert code == 1
    assert "cannot reach http://127.0.0.1:9/jobs/some-job" in capsys.readouterr().err
