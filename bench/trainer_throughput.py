"""Trainer throughput: our SFT pipeline's batching against TRL configured as the seed did.

The same tiny-but-not-trivial Gemma 3 (hidden 256, 4 layers, built here), the same
long-tailed chat rows, the same LoRA, one epoch each, on this CPU:

- seed: plain TRL `SFTTrainer`, no packing, eager attention, random batches of 8;
- ours: `trainer.sft.train_sft`, the pipeline's own path, with the attention and
  batching plan it makes here for `packing: false` (length-grouped batches of 8)
  and for `packing: true` (padding-free micro-batches of 8 packed rows, SDPA run one
  document at a time: trainer/document_attention.py).

One epoch, not a fixed number of steps: per-token cost grows with sequence length,
so only the same rows make the same work (length grouping even puts its longest
batches first). The unpacked runs take the same optimizer steps; the packed run fits
the same rows into fewer, fuller steps.

The machine is shared, so the runs take turns: each variant is its own process
(peak memory is its own), they start one after another (time to first optimizer
step is uncontended), and then a coordinator lets them do one optimizer step at a
time, always the run least far through its epoch, so that the runs go through their
epochs side by side (a packed step carries some 8 unpacked steps' rows) and background
load falls on all of them alike. Real tokens are the non-padding tokens the model was
fed (a forward pre-hook counts them); throughput is the steady state, every step after
the first (whose one-time set-up counts in the time to first optimizer step).
A packed run also checks that packed examples do not see each other.

Packed against unpacked is the figure noise could flip, so it is measured in several
rounds (`--rounds`, 3 by `make bench`), each a fresh pair of processes taking turns as
above; the bench reports the round with the median ratio and lists every round's.

    python -m bench.trainer_throughput              # prints the figures as JSON
    python -m bench.trainer_throughput --rounds 3   # and two more packed/unpacked pairs
    python -m bench.trainer_throughput --proposal   # and a batching the pipeline does not have
    python -m bench.trainer_throughput --dense-mask # and packing as it was before

The proposal (not in trainer/): rows sorted by length into batches of 8, the batches
in random order, so that padding all but vanishes while the order stays random.
The dense-mask variant is the packed plan the pipeline had before document-wise
attention: one packed row per micro-batch (accumulation 8), SDPA with transformers'
block-diagonal mask over the row.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

ROWS = 600  # 75 steps of 8, as ENVIRONMENT.md measured; fewer rows make smaller length groups
BATCH = 8
MAX_LENGTH = 512
SEED = 7
VARIANTS = ("seed", "ours", "ours-packed")
PAIR = ("ours", "ours-packed")  # what the later rounds measure again
ROUNDS = 3
PROPOSAL = "proposal-sorted-batches"
DENSE_MASK = "ours-packed-dense-mask"
LORA = {"lora_rank": 16, "lora_alpha": 16, "lora_dropout": 0.05}  # the seed's defaults


# The model and the data ------------------------------------------------------------------


def build_model(directory: Path) -> Path:
    """A Gemma 3 text model, hidden 256, 4 layers (3 sliding, 1 global), random weights."""
    import torch
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    from trainer.tiny import END_OF_TURN, build_tokenizer

    tokenizer = build_tokenizer(directory, family="gemma3", seed=SEED)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=64,
        query_pre_attn_scalar=64,
        sliding_window=256,
        layer_types=["sliding_attention"] * 3 + ["full_attention"],
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TURN)],
    )
    torch.manual_seed(SEED)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def chat_rows(count: int = ROWS, seed: int = SEED) -> list[dict[str, Any]]:
    """Conversations whose answers have a long-tailed (log-normal) number of sentences."""
    from trainer.tiny import generated_corpus

    rng = random.Random(seed)
    sentences = generated_corpus(seed + 1)
    rows = []
    for _ in range(count):
        length = min(60, max(1, round(rng.lognormvariate(0.5, 1.1))))
        answer = " ".join(rng.choice(sentences) for _ in range(length))
        question = rng.choice(sentences)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return rows


# Measuring a run -------------------------------------------------------------------------


class Meter:
    """Counts the tokens of each training forward pass and times each optimizer step.

    After each step it reports on `report` and waits for a line on stdin before the
    next: the coordinator's turn (see `measure`). A step's time runs from its turn to
    its end; the first step's from the start of training.
    """

    def __init__(self, report: IO[str] | None) -> None:
        self.report = report
        self.started = time.perf_counter()
        self.real = self.fed = 0  # fed: real + padding
        self.turn = self.started
        self.steps: list[dict[str, float]] = []
        self.first_step_end = 0.0

    def count(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if not module.training or ids is None:
            return
        self.fed += int(ids.numel())
        # Padding-free batches have no mask and no padding: every token is real.
        self.real += int(mask.sum()) if mask is not None else int(ids.numel())

    def step_ended(self, total_steps: int) -> None:
        now = time.perf_counter()
        if not self.steps:
            self.first_step_end = now
        self.steps.append({"seconds": now - self.turn, "real": self.real, "fed": self.fed})
        self.real = self.fed = 0
        if self.report is not None:
            self.report.write(f"step {len(self.steps)} of {total_steps}\n")
            self.report.flush()
            sys.stdin.readline()  # wait for our turn
        self.turn = time.perf_counter()

    def callback(self) -> Any:
        from transformers import TrainerCallback

        meter = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                kwargs["model"].register_forward_pre_hook(meter.count, with_kwargs=True)
                meter.turn = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                meter.step_ended(state.max_steps)

        return Callback()

    def figures(self) -> dict[str, Any]:
        seconds = sum(step["seconds"] for step in self.steps)
        real = sum(step["real"] for step in self.steps)
        fed = sum(step["fed"] for step in self.steps)
        first = self.steps[0]
        return {
            "optimizer_steps": len(self.steps),
            "real_tokens": real,
            # Steady state: the first step (one-time set-up) is in seconds_to_first_step.
            "real_tokens_per_second": (real - first["real"]) / (seconds - first["seconds"]),
            "real_tokens_per_second_all_steps": real / seconds,
            "padding_fraction": 1 - real / fed,
            "seconds_training": seconds,
            # The first step's end, from the start of this run: load, tokenize, pack, step.
            "seconds_to_first_step": self.first_step_end - self.started,
            "first_step_seconds": first["seconds"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def lora_config() -> Any:
    from trainer.modeling import lora_config as our_lora_config
    from tuning.spec import Hyperparameters

    return our_lora_config(Hyperparameters.model_validate(LORA))


def run_seed(model_dir: Path, rows: list[dict[str, Any]], meter: Meter) -> Any:
    """Plain TRL as the seed service configured it: no packing, eager attention."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    )
    args = SFTConfig(
        output_dir=str(model_dir.parent / "seed-output"),
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1,
        num_train_epochs=1,
        max_length=MAX_LENGTH,
        packing=False,
        learning_rate=2e-4,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        gradient_checkpointing=False,  # as in our runs on CPU: the same compute per token
        bf16=False,
        use_cpu=True,
        seed=SEED,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        peft_config=lora_config(),
        callbacks=[meter.callback()],
    )
    trainer.train()
    return trainer


def run_ours(
    model_dir: Path,
    rows: list[dict[str, Any]],
    meter: Meter,
    *,
    packing: bool,
    sorted_batches: bool = False,
    dense_mask: bool = False,
) -> Any:
    """The pipeline's SFT path with the attention and batching it chooses on this machine."""
    from trainer.batching import plan_batching
    from trainer.data import DatasetSplits
    from trainer.hardware import choose_attention, detect
    from trainer.modeling import load_model_config, load_tokenizer
    from trainer.recipes import TrainingRun
    from trainer.sft import train_sft
    from tuning.dataset.rows import RowFormat
    from tuning.spec import TrainingConfig

    config = TrainingConfig.model_validate(
        {
            "base_model_id": "google/gemma-3-1b-it",  # not read: the run's model_dir is
            "method": "LoRA",
            "hyperparameters": {
                **LORA,
                "batch_size": BATCH,
                "gradient_accumulation_steps": 1,
                "epochs": 1,
                "max_seq_length": MAX_LENGTH,
                "packing": packing,
                "learning_rate": 2e-4,
                "logging_steps": 1000,
                "save_strategy": "no",
                "seed": SEED,
            },
        }
    )
    hardware = detect()
    attention = choose_attention(load_model_config(model_dir), use_fa2=False, hardware=hardware)
    hp = config.hyperparameters
    batching = plan_batching(
        packing=hp.packing,
        batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        attention=attention,
    )
    if dense_mask:  # the packed plan before document-wise attention
        batching = dataclasses.replace(
            batching,
            per_device_batch_size=1,
            gradient_accumulation_steps=hp.gradient_accumulation_steps * hp.batch_size,
            eval_packing=False,
            reason="packing, one packed row per micro-batch, block-diagonal mask",
            training_attention=None,
        )
    splits = DatasetSplits(
        train=rows, eval=None, row_format=RowFormat.MESSAGES, train_source="bench", eval_source=None
    )
    run = TrainingRun(
        config=config,
        splits=splits,
        model_dir=model_dir,
        output_dir=model_dir.parent / f"ours-output-{packing}",
        tokenizer=load_tokenizer(model_dir),
        hardware=hardware,
        attention=attention,
        batching=batching,
        evaluate=False,
        callbacks=[meter.callback()],
    )
    if sorted_batches:
        trainer = train_with_sorted_batches(run)
        trainer.batching_reason = f"proposal: length-sorted batches in random order; {attention}"
        return trainer
    trainer = train_sft(run).trainer
    trainer.batching_reason = f"{batching.reason}; {attention} attention"
    return trainer


def train_with_sorted_batches(run: Any) -> Any:
    """train_sft's trainer, but with batches of rows of near-equal length in random order."""
    import torch
    from datasets import Dataset

    from trainer.evaluation import TokenMetricsSFTTrainer
    from trainer.modeling import prepare_model
    from trainer.sft import sft_config

    class SortedBatches(torch.utils.data.Sampler[int]):
        def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
            self.lengths, self.batch_size, self.seed = lengths, batch_size, seed

        def __len__(self) -> int:
            return len(self.lengths)

        def __iter__(self) -> Any:
            generator = torch.Generator().manual_seed(self.seed)
            tie_breaks = torch.rand(len(self.lengths), generator=generator).tolist()
            order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], tie_breaks[i]))
            size = self.batch_size
            batches = [order[i : i + size] for i in range(0, len(order), size)]
            for b in torch.randperm(len(batches), generator=generator).tolist():
                yield from batches[b]

    class Trainer(TokenMetricsSFTTrainer):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            lengths = [len(ids) for ids in dataset["input_ids"]]
            return SortedBatches(lengths, self.args.train_batch_size, self.args.seed)

    model, peft_config = prepare_model(run)
    trainer = Trainer(
        model=model,
        args=sft_config(run, assistant_only_loss=True, gradient_checkpointing=False),
        train_dataset=Dataset.from_list(run.splits.train),
        processing_class=run.tokenizer,
        peft_config=peft_config,
        callbacks=run.callbacks,
    )
    trainer.train()
    return trainer


def packed_isolation(trainer: Any, batches: int = 2) -> dict[str, Any]:
    """Each example's logits alone against its logits inside the packed batch it was put in.

    The packed forward pass gets what training gets (the collator's position ids and
    document boundaries) and runs the attention training ran; each example alone, and the
    control, run on plain SDPA, the reference. The control runs the same rows without
    position ids: what the logits would be if the examples attended to each other, to
    show that the check can tell.
    """
    import torch

    model = trainer.model.eval()  # no dropout
    trained_with = model.config._attn_implementation
    worst = control = 0.0
    examples = 0
    with torch.no_grad():
        for _, batch in zip(range(batches), trainer.get_train_dataloader(), strict=False):
            model.set_attn_implementation(trained_with)
            inputs = {key: value for key, value in batch.items() if key != "labels"}
            packed = model(**inputs).logits
            model.set_attn_implementation("sdpa")
            ids, positions = batch["input_ids"], batch["position_ids"]
            unisolated = model(input_ids=ids).logits
            starts = [*(positions[0] == 0).nonzero().flatten().tolist(), ids.shape[1]]
            for start, end in itertools.pairwise(starts):
                alone = model(input_ids=ids[:, start:end]).logits
                worst = max(worst, float((alone - packed[:, start:end]).abs().max()))
                if start > 0:
                    difference = (alone - unisolated[:, start:end]).abs().max()
                    control = max(control, float(difference))
                examples += 1
    model.set_attn_implementation(trained_with)
    return {
        "attention": trained_with,
        "examples_checked": examples,
        "max_abs_logit_difference": worst,
        "control_without_position_ids": control,
        "isolated": worst < 1e-3 < control,
    }


def run_variant(variant: str, model_dir: Path, data: Path, report: IO[str] | None) -> dict:
    rows = json.loads(data.read_text())
    meter = Meter(report)
    if variant == "seed":
        trainer = run_seed(model_dir, rows, meter)
        batching = "random batches padded to their longest row; eager attention"
    else:
        trainer = run_ours(
            model_dir,
            rows,
            meter,
            packing=variant in ("ours-packed", DENSE_MASK),
            sorted_batches=variant == PROPOSAL,
            dense_mask=variant == DENSE_MASK,
        )
        batching = trainer.batching_reason
    figures = {"batching": batching, **meter.figures()}
    if variant in ("ours-packed", DENSE_MASK):
        figures["isolation"] = packed_isolation(trainer)
    return figures


# The comparison ----------------------------------------------------------------------------


def measure(
    workdir: Path, rows: int = ROWS, variants: tuple[str, ...] = VARIANTS, rounds: int = 1
) -> dict:
    """Every variant in its own process, started one by one, then stepping in turns.

    Later rounds run the packed/unpacked pair again (the same model and rows), each in
    fresh processes; their figures are under "rounds", one dict of variants per round.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    model_dir = build_model(workdir / "model")
    data = workdir / "rows.json"
    data.write_text(json.dumps(chat_rows(rows)))
    results = _measure_round(model_dir, data, workdir, variants)
    pair = tuple(variant for variant in PAIR if variant in variants)
    later = [
        _measure_round(model_dir, data, workdir / f"round-{number}", pair)
        for number in range(2, rounds + 1)
    ]
    return {**results, "rounds": [{v: results[v] for v in pair}, *later]} if later else results


def _measure_round(model_dir: Path, data: Path, workdir: Path, variants: tuple[str, ...]) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    runs = {variant: _start(variant, model_dir, data, workdir) for variant in variants}
    active = list(runs.values())
    while active:  # one optimizer step at a time, to the run least far through its epoch
        run = min(active, key=lambda run: run.progress)
        if not run.next_turn():
            active.remove(run)
    return {variant: run.result() for variant, run in runs.items()}


class _Run:
    """A variant's process, which reports each optimizer step and waits for its next turn."""

    def __init__(self, variant: str, process: subprocess.Popen[str], report: IO[str], out: Path):
        self.variant, self.process, self.report, self.out = variant, process, report, out
        self.progress = 0.0  # the fraction of its optimizer steps done

    def wait_for_step(self) -> bool:
        """True once it reported a step (and waits); False once it finished."""
        line = self.report.readline()
        if line.startswith("step"):
            _, done, _, total = line.split()
            self.progress = int(done) / int(total)
            return True
        if self.process.wait() != 0:
            raise RuntimeError(f"the {self.variant} run failed; see {self.out.with_suffix('.log')}")
        return False

    def next_turn(self) -> bool:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return self.wait_for_step()

    def result(self) -> dict[str, Any]:
        return dict(json.loads(self.out.read_text()))


def _start(variant: str, model_dir: Path, data: Path, workdir: Path) -> _Run:
    """Start the variant's process and return once its first step is done (uncontended)."""
    read_end, write_end = os.pipe()
    out = workdir / f"{variant}.json"
    with out.with_suffix(".log").open("w") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.trainer_throughput"),
                *("--variant", variant, "--model", str(model_dir), "--data", str(data)),
                *("--out", str(out), "--report-fd", str(write_end)),
            ],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            pass_fds=(write_end,),
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
        )
    os.close(write_end)
    run = _Run(variant, process, os.fdopen(read_end), out)
    if not run.wait_for_step():
        raise RuntimeError(f"the {variant} run ended before its first step")
    return run


def packed_against_unpacked(rounds: list[dict[str, Any]]) -> tuple[dict[str, Any], list[float]]:
    """The round whose packed/unpacked ratio of real tokens/s is the median, and every ratio."""
    ratios = [
        pair["ours-packed"]["real_tokens_per_second"] / pair["ours"]["real_tokens_per_second"]
        for pair in rounds
    ]
    middle = sorted(range(len(rounds)), key=lambda i: ratios[i])[(len(rounds) - 1) // 2]
    return rounds[middle], ratios


def run(workdir: Path, rows: int = ROWS, rounds: int = ROUNDS) -> Any:
    """The comparison as a bench table: each of our two plans against the seed's, and packed
    against unpacked (the median of `rounds` rounds)."""
    from bench.report import Benchmark, Comparison

    load_before = os.getloadavg()[0]
    results = measure(workdir, rows, rounds=rounds)
    load_after = os.getloadavg()[0]
    seed = results["seed"]
    pairs = results.get("rounds") or [{v: results[v] for v in PAIR}]
    median_pair, ratios = packed_against_unpacked(pairs)
    benchmark = Benchmark("trainer throughput")
    benchmark.comparisons.append(
        Comparison(
            name="real tokens/s, packing: true vs packing: false",
            unit="tok/s",
            ours=median_pair["ours-packed"]["real_tokens_per_second"],
            baseline=median_pair["ours"]["real_tokens_per_second"],
            baseline_is=f"ours, packing: false, in the same round (median of {len(pairs)})",
            lower_is_better=False,
            target=1.0,
        )
    )
    for variant, plan in (("ours", "packing: false"), ("ours-packed", "packing: true")):
        ours = results[variant]
        benchmark.comparisons += [
            Comparison(
                name=f"real tokens/s, {plan}",
                unit="tok/s",
                ours=ours["real_tokens_per_second"],
                baseline=seed["real_tokens_per_second"],
                baseline_is="TRL SFTTrainer as the seed: no packing, eager",
                lower_is_better=False,
                target=2.0,
            ),
            Comparison(
                name=f"time to first optimizer step, {plan}",
                unit="s",
                ours=ours["seconds_to_first_step"],
                baseline=seed["seconds_to_first_step"],
                baseline_is="the same seed run",
                lower_is_better=True,
            ),
            Comparison(
                name=f"peak memory (RSS), {plan}",
                unit="MiB",
                ours=ours["peak_rss_mib"],
                baseline=seed["peak_rss_mib"],
                baseline_is="the same seed run",
                lower_is_better=True,
            ),
        ]
    limit = 1 / (1 - seed["padding_fraction"])
    isolation = results["ours-packed"]["isolation"]
    benchmark.notes = [
        "padding fraction: seed {:.0%}, ours {:.0%} (packing: false), {:.0%} (packing: true); "
        "no-padding limit for this data 1/(1-{:.2f}) = {:.2f}x".format(
            seed["padding_fraction"],
            results["ours"]["padding_fraction"],
            results["ours-packed"]["padding_fraction"],
            seed["padding_fraction"],
            limit,
        ),
        "packed examples isolated: {} ({} attention; max |logit difference| alone vs packed "
        "{:.1e} over {} examples; {:.2f} without position ids)".format(
            "yes" if isolation["isolated"] else "NO",
            isolation["attention"],
            isolation["max_abs_logit_difference"],
            isolation["examples_checked"],
            isolation["control_without_position_ids"],
        ),
        "packed/unpacked real tokens/s by round: {} (the table shows the median round)".format(
            ", ".join(f"{ratio:.2f}x" for ratio in ratios)
        ),
        f"load average {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} cores",
        "{} rows, one epoch: optimizer steps seed {}, ours {} and {}".format(
            rows,
            seed["optimizer_steps"],
            results["ours"]["optimizer_steps"],
            results["ours-packed"]["optimizer_steps"],
        ),
    ]
    benchmark.details = {
        "no_padding_limit": limit,
        "rows": rows,
        "packed_against_unpacked_by_round": ratios,
        **results,
    }
    return benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--variant", choices=[*VARIANTS, PROPOSAL, DENSE_MASK], help=argparse.SUPPRESS
    )
    parser.add_argument("--proposal", action="store_true", help="measure the proposal too")
    parser.add_argument("--dense-mask", action="store_true", help="and packing as it was")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--report-fd", type=int)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--rounds", type=int, default=1, help="packed/unpacked pairs to measure")
    parser.add_argument("--workdir", type=Path, default=Path(".local/bench/trainer"))
    args = parser.parse_args(argv)
    if args.variant:
        report = os.fdopen(args.report_fd, "w") if args.report_fd is not None else None
        figures = run_variant(args.variant, args.model, args.data, report)
        args.out.write_text(json.dumps(figures, indent=2))
        return 0
    variants = (
        *VARIANTS,
        *((PROPOSAL,) if args.proposal else ()),
        *((DENSE_MASK,) if args.dense_mask else ()),
    )
    results = measure(args.workdir, args.rows, variants, args.rounds)
    pairs = results.get("rounds") or [{v: results[v] for v in PAIR}]
    results["packed_against_unpacked_by_round"] = packed_against_unpacked(pairs)[1]
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
