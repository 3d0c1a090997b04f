"""`tuning chat JOB`: talk to a trained model in the terminal, through its chat template.

    tuning chat JOB                          # the merged model (or a Full job's weights)
    tuning chat JOB --prompt "What colour is the cat?"   # one answer on stdout, then exit
    tuning chat JOB --gguf q8_0              # a GGUF file, run by llama.cpp's CLI

The model is downloaded once into `--dir` (default ~/.cache/gemma-tuning/chat/JOB/...) and
reused. Safetensors run with transformers, greedy unless `--temperature` is above 0; a GGUF
file runs with `llama-completion` built from the same pinned llama.cpp sources as the trainer's
quantizer (`make llama-cpp`). torch and transformers are imported only here, when chatting, so
the rest of the CLI stays light.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tuning.cli import add_command, client_from
from tuning.cli.client import ClientError
from tuning.cli.commands import write_files
from tuning.llama_cpp_cache import CLI_BINARY, LLAMA_CLI_ENV, find_cli
from tuning.spec import GgufQuantization

END_OF_TURN = "<end_of_turn>"
COMPLETE = ".complete"  # written once every file of a download is in place
QUIT = {"/exit", "/quit"}
RESET = "/reset"


def register(sub: Any) -> None:
    parser = add_command(
        sub, "chat", chat, "chat with a completed job's model in the terminal (or answer once)"
    )
    parser.add_argument("job_id")
    parser.add_argument("--prompt", help="answer this one user message on stdout and exit")
    parser.add_argument("--system", help="a system message before the conversation")
    parser.add_argument(
        "--gguf",
        nargs="?",
        const="",
        metavar="QUANT",
        choices=["", *(q.value for q in GgufQuantization)],
        help="run a GGUF file of the job with llama.cpp's CLI (default: the first exported)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    parser.add_argument(
        "--dir", type=Path, help="where to keep the downloaded model (default: a per-job cache)"
    )


def chat(args: argparse.Namespace) -> int:
    client = client_from(args)
    job = client.get_job(args.job_id)
    if job.get("status") != "completed":
        raise ClientError(f"job {args.job_id} is {job.get('status')}: only a completed job chats")
    artifacts = job.get("artifacts") or {}
    if args.gguf is not None:
        files = artifacts.get("gguf_files") or {}
        if not files:
            raise ClientError(
                f"job {args.job_id} exported no GGUF file (export_config.include_gguf); "
                "chat with its merged model instead (leave out --gguf)"
            )
        quantization = args.gguf or next(iter(files))
        if quantization not in files:
            raise ClientError(f"job {args.job_id} has GGUF files {sorted(files)}, not {args.gguf}")
        cli = find_cli()
        if cli is None:
            raise ClientError(
                f"a GGUF chat needs llama.cpp's {CLI_BINARY}, which is not built: run `make "
                f"llama-cpp` (or set {LLAMA_CLI_ENV}), or leave out --gguf to use the merged model"
            )
        folder = download(client, args, "gguf", quantization=quantization)
        (model_file,) = sorted(folder.glob("*.gguf"))
        return chat_gguf(cli, model_file, args)
    artifact = "merged" if artifacts.get("merged_path") else "adapter"
    if not artifacts.get(f"{artifact}_path"):
        raise ClientError(f"job {args.job_id} exported no model to chat with")
    folder = download(client, args, artifact)
    if (folder / "adapter_config.json").is_file():
        raise ClientError(
            f"job {args.job_id} exported a LoRA adapter only: chat needs its merged model "
            "(export_config.format: merged) or a GGUF file (include_gguf, then --gguf)"
        )
    return chat_transformers(folder, args)


def download(
    client: Any, args: argparse.Namespace, artifact: str, quantization: str | None = None
) -> Path:
    """The artifact's files in a local folder, fetched unless a complete copy is there."""
    name = f"{artifact}-{quantization}" if quantization else artifact
    folder = args.dir or chat_cache() / args.job_id / name
    if (folder / COMPLETE).is_file():
        return folder
    answer = client.download_link(args.job_id, artifact, quantization=quantization)
    print(f"downloading the job's {name} model into {folder}", file=sys.stderr)
    write_files(answer, folder)
    (folder / COMPLETE).write_text("")
    return folder


def chat_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "gemma-tuning" / "chat"


# ---------------------------------------------------------------------------------------------
# safetensors, with transformers


def chat_transformers(folder: Path, args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not tokenizer.chat_template:
        raise ClientError(f"{folder} has no chat template: it is not a chat model")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model = model.to(device).eval()
    stops = [tokenizer.eos_token_id]
    if END_OF_TURN in tokenizer.get_vocab():
        stops.append(tokenizer.convert_tokens_to_ids(END_OF_TURN))

    def answer(messages: list[dict[str, str]], streamer: Any = None) -> str:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(device)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": args.temperature}
            if args.temperature
            else {"do_sample": False}
        )
        with torch.no_grad():
            output = model.generate(
                **inputs,
                max_new_tokens=args.max_new_tokens,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                streamer=streamer,
                **sampling,
            )
        new = output[0, inputs["input_ids"].shape[1] :]
        return str(tokenizer.decode(new, skip_special_tokens=True)).strip()

    system = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        print(answer([*system, {"role": "user", "content": args.prompt}]))
        return 0
    print(f"chatting with {folder} ({RESET} forgets, {'/exit'} or Ctrl-D ends)", file=sys.stderr)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    history = list(system)
    while (line := read_line()) is not None:
        if line.strip() in QUIT:
            break
        if line.strip() == RESET:
            history = list(system)
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        print("model> ", end="", flush=True)
        history.append({"role": "assistant", "content": answer(history, streamer)})
    return 0


def read_line() -> str | None:
    try:
        return input("you> ")
    except EOFError:
        print(file=sys.stderr)
        return None


# ---------------------------------------------------------------------------------------------
# GGUF, with llama.cpp's CLI


def llama_cli_command(cli: Path, model_file: Path, args: argparse.Namespace) -> list[str]:
    """llama-completion in conversation mode: the GGUF's own chat template, greedy by default;
    with a prompt, one turn and exit."""
    command = [str(cli), "--model", str(model_file), "--conversation", "--no-warmup"]
    command += ["--n-predict", str(args.max_new_tokens), "--temp", str(args.temperature)]
    if args.system:
        command += ["--system-prompt", args.system]
    if args.prompt is not None:
        command += ["--prompt", args.prompt, "--single-turn", "--no-display-prompt"]
    return command


def chat_gguf(cli: Path, model_file: Path, args: argparse.Namespace) -> int:
    command = llama_cli_command(cli, model_file, args)
    if args.prompt is None:  # interactive: the terminal is llama.cpp's
        return subprocess.run(command, check=False).returncode
    result = subprocess.run(
        command, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise ClientError(f"{cli.name} failed with exit code {result.returncode}:\n{tail}")
    print(clean_llama_output(result.stdout))
    return 0


def clean_llama_output(stdout: str) -> str:
    """The answer alone: llama-completion prints it on stdout, followed by its `> ` prompt."""
    text = stdout.replace(END_OF_TURN, "")
    lines = [line for line in text.strip().splitlines() if line.strip() not in {">", ""}]
    return "\n".join(lines).strip()
