"""`tuning chat`: the llama.cpp command it runs, and a CLI that stays light to import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tuning.cli import build_parser
from tuning.cli.chat import clean_llama_output, llama_cli_command


def test_a_prompt_is_one_turn_of_a_conversation_and_greedy_by_default() -> None:
    args = build_parser().parse_args(["chat", "job-1", "--gguf", "--prompt", "Hi?"])

    command = llama_cli_command(Path("/bin/llama-completion"), Path("m.gguf"), args)

    assert command[:3] == ["/bin/llama-completion", "--model", "m.gguf"]
    assert "--conversation" in command and "--single-turn" in command
    assert command[command.index("--prompt") + 1] == "Hi?"
    assert command[command.index("--temp") + 1] == "0.0"


def test_without_a_prompt_the_conversation_is_interactive() -> None:
    args = build_parser().parse_args(["chat", "job-1", "--gguf", "q8_0", "--system", "Be brief."])

    command = llama_cli_command(Path("llama-completion"), Path("m.gguf"), args)

    assert "--single-turn" not in command and "--prompt" not in command
    assert command[command.index("--system-prompt") + 1] == "Be brief."


def test_the_answer_is_kept_without_the_cli_prompt_marker() -> None:
    assert clean_llama_output("The cat is black.\n\n> \n") == "The cat is black."


def test_the_cli_parses_chat_without_importing_torch() -> None:
    code = (
        "import json, sys; from tuning.cli import build_parser; "
        "build_parser().parse_args(['chat', 'job-1', '--prompt', 'x']); "
        "print(json.dumps(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stderr
