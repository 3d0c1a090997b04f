"""The CLI's pure parts: endpoint resolution, error messages, loss curves."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tuning.cli import main
from tuning.cli.client import ApiClient, ClientError, Endpoints, _decode
from tuning.cli.commands import loss_curves
from tuning.local.issuer import LocalIssuer


def local_endpoints(monkeypatch: pytest.MonkeyPatch, issuer_key: Path | None) -> None:
    for name in ("SUBMIT", "STATUS", "DELETE"):
        monkeypatch.setenv(f"TUNING_{name}_URL", f"http://127.0.0.1:900{len(name)}/")
    if issuer_key is None:
        monkeypatch.delenv("TUNING_LOCAL_ISSUER_KEY", raising=False)
    else:
        monkeypatch.setenv("TUNING_LOCAL_ISSUER_KEY", str(issuer_key))


def test_local_endpoints_mint_tokens_for_the_named_caller(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    issuer = LocalIssuer.create(tmp_path / "issuer.pem")
    local_endpoints(monkeypatch, issuer.key_path)
    monkeypatch.setenv("TUNING_CALLER", "alice@example.com")
    sent: list[dict[str, str]] = []

    class Recording(requests.Session):
        def request(self, method, url, **kwargs):  # type: ignore[no-untyped-def,override]
            sent.append(kwargs["headers"])
            response = requests.Response()
            response.status_code, response._content = 200, b"{}"
            return response

    endpoints = Endpoints.from_environment(Path("/nonexistent.yaml"))
    ApiClient(endpoints, session=Recording()).get_job("j1")
    as_bob = Endpoints.from_environment(Path("/nonexistent.yaml"), caller="bob@example.com")

    token = sent[0]["Authorization"].removeprefix("Bearer ")
    assert endpoints.submit_url == "http://127.0.0.1:9006"
    assert issuer.verify(token, audience="http://127.0.0.1:9006")["email"] == "alice@example.com"
    assert as_bob.caller == "bob@example.com"  # `tuning --as bob@example.com`


def test_local_endpoints_without_the_issuer_say_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local_endpoints(monkeypatch, None)

    with pytest.raises(ClientError, match="TUNING_LOCAL_ISSUER_KEY"):
        Endpoints.from_environment(Path("/nonexistent.yaml"))


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

    assert endpoints.local_issuer_key is None  # Google ID tokens
    assert endpoints.caller is None


def test_missing_endpoint_says_which_variable_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNING_SUBMIT_URL", raising=False)

    endpoints = Endpoints.from_environment(Path("/nonexistent.yaml"))

    with pytest.raises(ClientError, match="TUNING_SUBMIT_URL"):  # said when a command needs it
        endpoints.submit_url  # noqa: B018


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
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("SUBMIT", "STATUS", "DELETE"):
        monkeypatch.setenv(f"TUNING_{name}_URL", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("TUNING_LOCAL_ISSUER_KEY", str(LocalIssuer.create(tmp_path / "k").key_path))

    code = main(["status", "some-job"])

    assert code == 1
    assert "cannot reach http://127.0.0.1:9/jobs/some-job" in capsys.readouterr().err
