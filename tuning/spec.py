"""The training request: what `POST /train` and the `training-requests` topic accept.

Field names, choices and defaults follow the seed service's API so that its
example request parses unchanged; every model forbids unknown fields, and
rules across fields fail with the full path of the field to fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import typing
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tuning.defaults import DEFAULTED_FIELDS, default_for, defaults_table
from tuning.errors import InvalidRequestError
from tuning.ids import (
    GCS_PREFIX_PATTERN,
    HF_MODEL_PATTERN,
    SEGMENT_PATTERN,
    HfRepoId,
    IdempotencyKey,
    SecretReference,
    SegmentId,
    has_dot_segments,
)

# Optimizer steps a job may ask for (and the most any step period may be). A GPU task runs
# at most 1 hour per attempt (https://cloud.google.com/run/docs/configuring/task-timeout)
# and a job resumes from checkpoints over a few attempts, so even at 10 steps a second
# (tiny models) a million steps is far more than one job finishes; yet every value below it
# fits the 64-bit integers Firestore stores and the trainer's counters
# (https://cloud.google.com/firestore/docs/concepts/data-types). Without a bound, 2**64
# reaches the record as an unwritable integer, and 10**12 books a GPU for nothing.
MAX_STEPS = 1_000_000
# Checkpoints kept in Cloud Storage when save_total_limit is left out, by method family.
CHECKPOINTS_KEPT = {"adapter": 3, "full": 1}
MAX_CHECKPOINTS_KEPT = 20
# `from_job`: a job id, then optionally ':' and one of its checkpoints' steps.
FROM_JOB_PATTERN = SEGMENT_PATTERN.removesuffix("$") + r"(:[0-9]{1,9})?$"
# GRPO reward weights: far above any useful scale, low enough that summed rewards stay finite.
MAX_REWARD_WEIGHT = 1000.0
# Sample answers and scored evaluation at the end of training (trainer/samples.py): bounds
# that keep the generation they cost to a stated, small share of a job's GPU time.
DEFAULT_SAMPLES = 5
MAX_SAMPLES = 16
MAX_SAMPLE_PROMPT_CHARS = 2000
DEFAULT_SAMPLE_NEW_TOKENS = 64
MAX_SAMPLE_NEW_TOKENS = 256
DEFAULT_SCORED_ROWS = 16
MAX_SCORED_ROWS = 64
SAMPLE_COST = (
    "GPU cost, bounded: greedy decoding by the base and the fine-tuned model of at most "
    f"{MAX_SAMPLES} + {MAX_SCORED_ROWS} distinct prompts (each cut to 1024 tokens), eight a "
    "batch, so at most 2 x ceil(prompts / 8) x sample_max_new_tokens decoding steps: 384 at "
    "the defaults (21 prompts, 64 tokens), estimated at 10 s for a 1B model and 30 s for 27B "
    "on one H100-class GPU (bench/samples_gpu.py measures it); the job's events say what it took."
)


class Contract(BaseModel):
    """Base of every request model: unknown fields are an error, not a silent no-op.

    No float may be NaN or Infinity (`json.loads("1e999")` is inf): every comparison with
    one is false, so it would pass range checks it fails and poison the loss.
    """

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, use_enum_values=False, allow_inf_nan=False
    )


def field_error(field: str, message: str) -> PydanticCustomError:
    """An error for a rule across fields, carrying the name of the field to fix."""
    return PydanticCustomError("invalid_combination", message, {"field": field})


class Provider(StrEnum):
    HUGGINGFACE = "huggingface"
    UNSLOTH = "unsloth"


class Method(StrEnum):
    LORA = "LoRA"
    QLORA = "QLoRA"
    FULL = "Full"

    @property
    def uses_adapter(self) -> bool:
        return self is not Method.FULL


class TrainerType(StrEnum):
    SFT = "sft"
    DPO = "dpo"
    ORPO = "orpo"
    GRPO = "grpo"


class Modality(StrEnum):
    TEXT = "text"
    VISION = "vision"


class ExportFormat(StrEnum):
    ADAPTER = "adapter"
    MERGED = "merged"


class Destination(StrEnum):
    GCS = "gcs"
    HFHUB = "hfhub"


class GgufQuantization(StrEnum):
    F16 = "f16"
    BF16 = "bf16"
    Q8_0 = "q8_0"
    Q4_K_M = "q4_k_m"


class EvalStrategy(StrEnum):
    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"


class SaveStrategy(StrEnum):
    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"


class SchedulerType(StrEnum):
    LINEAR = "linear"
    COSINE = "cosine"
    COSINE_WITH_RESTARTS = "cosine_with_restarts"
    POLYNOMIAL = "polynomial"
    CONSTANT = "constant"
    CONSTANT_WITH_WARMUP = "constant_with_warmup"
    INVERSE_SQRT = "inverse_sqrt"


class RewardFunction(StrEnum):
    """Built-in GRPO rewards."""

    FORMAT = "format"  # the completion follows the reasoning/answer format
    EXACT_MATCH = "exact_match"  # the extracted answer equals the reference column
    NUMERIC_MATCH = "numeric_match"  # the extracted number equals the reference number


def _by_type(summary: str, field: str, sources: str) -> str:
    """A description for a field whose default depends on the trainer type and method."""
    return (
        f"{summary} Omitted or null: the default for the job's `trainer_type` and method "
        f"(LoRA and QLoRA alike), below; a value given is always kept. {sources}\n\n"
        f"{defaults_table(field)}"
    )


class Hyperparameters(Contract):
    """Training settings. learning_rate, epochs, lr_scheduler_type, warmup_ratio, weight_decay
    and beta default by trainer type and method when omitted or null (tables in each field)."""

    learning_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description=_by_type(
            "Peak learning rate.",
            "learning_rate",
            "Adapters: Unsloth's Gemma 3 notebooks (SFT 2e-4, GRPO 5e-6), Axolotl's Gemma 3 "
            "QLoRA recipe (2e-4) and Unsloth's DPO guide (5e-6). Full: TRL 1.16's SFTConfig, "
            "DPOConfig, ORPOConfig and GRPOConfig defaults, about a tenth of the adapter rate "
            "(https://huggingface.co/docs/trl/lora_without_regret).",
        ),
    )
    batch_size: int = Field(2, ge=1, le=1024, description="Per-device micro-batch size.")
    eval_batch_size: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Per-device evaluation batch size. Omitted or null: twice `batch_size`, "
        "at most 8 (transformers' and TRL's default) and never below `batch_size`: evaluation "
        "keeps no activations for a backward pass nor optimizer state, so it fits larger "
        "batches where training fit. GRPO evaluates one group of `num_generations` "
        "completions per batch instead.",
    )
    gradient_accumulation_steps: int = Field(4, ge=1, le=1024)
    epochs: float | None = Field(
        None,
        gt=0,
        le=100,
        description=_by_type(
            "Passes over the training split.",
            "epochs",
            "GRPO trains one epoch (Unsloth's Gemma 3 GRPO notebook): each step samples "
            "num_generations completions per prompt.",
        ),
    )
    max_steps: int = Field(
        -1, ge=-1, le=MAX_STEPS, description="Optimizer steps; -1 trains for `epochs`."
    )
    packing: bool = Field(False, description="Pack several examples into one sequence.")
    use_fa2: bool = Field(False, description="Use FlashAttention-2 when the GPU has it.")
    max_seq_length: int = Field(
        1024,
        ge=16,
        le=131072,
        description="Tokens per example (DPO/ORPO: prompt plus answer). ORPO (TRL's "
        "ORPOTrainer) computes full-vocabulary logits for the chosen and the rejected answer "
        "of every row: on Gemma's 262,144-token vocabulary that is about 2 x batch_size x "
        "max_seq_length x 1 MiB in float32 (4 GiB at 1024 tokens and batch 2), on top of "
        "the model; lower this or batch_size for ORPO on a small GPU. SFT and DPO score only "
        "the target tokens and need no such room.",
    )
    lr_scheduler_type: SchedulerType | None = Field(
        None,
        description=_by_type(
            "Learning-rate schedule after warmup.",
            "lr_scheduler_type",
            "Linear for SFT (Unsloth's Gemma 3 notebook; transformers' default) and DPO/ORPO "
            "(Unsloth's DPO guide); cosine for GRPO (Unsloth's Gemma 3 GRPO notebook).",
        ),
    )
    warmup_ratio: float | None = Field(
        None,
        ge=0,
        lt=1,
        description=_by_type(
            "Share of the optimizer steps over which the learning rate rises to its peak.",
            "warmup_ratio",
            "0.1: Axolotl's Gemma 3 recipes, Unsloth's DPO guide and Gemma 3 GRPO notebook.",
        ),
    )
    weight_decay: float | None = Field(
        None,
        ge=0,
        le=1,
        description=_by_type(
            "AdamW weight decay.",
            "weight_decay",
            "0 as in Axolotl's Gemma 3 recipes and Unsloth's DPO guide; 0.1 for GRPO "
            "(Unsloth's Gemma 3 GRPO notebook).",
        ),
    )
    save_strategy: SaveStrategy = Field(SaveStrategy.EPOCH, description="When to checkpoint.")
    save_steps: int = Field(
        100, ge=1, le=MAX_STEPS, description="Checkpoint period with save_strategy=steps."
    )
    save_total_limit: int | None = Field(
        None,
        ge=1,
        le=MAX_CHECKPOINTS_KEPT,
        description="How many of the newest checkpoints stay in Cloud Storage (listed by "
        "`GET /jobs/{job_id}/checkpoints`; the latest is always kept). Default: "
        f"{CHECKPOINTS_KEPT['adapter']} for LoRA and QLoRA, whose checkpoints are small; "
        f"{CHECKPOINTS_KEPT['full']} for Full, whose every checkpoint holds the weights and "
        "the optimizer state (about 16 bytes per parameter).",
    )
    load_best_model_at_end: bool = Field(
        False,
        description="Also keep the checkpoint with the lowest eval_loss, and export it as the "
        "final model. Needs evaluation at the checkpoints: eval_config.eval_strategy equal to "
        "save_strategy (and save_steps a multiple of eval_steps), as transformers' Trainer "
        "requires.",
    )
    logging_steps: int = Field(
        10, ge=1, le=MAX_STEPS, description="Optimizer steps between progress events."
    )
    lora_rank: int = Field(16, ge=1, le=1024)
    lora_alpha: int = Field(16, ge=1, le=4096)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    seed: int = Field(42, ge=0, le=2**31 - 1)
    beta: float | None = Field(
        None,
        ge=0,
        le=100,
        description=_by_type(
            "DPO/ORPO preference strength (above 0); GRPO's KL weight against the base model.",
            "beta",
            "TRL 1.16's defaults: 0.1 for DPO and ORPO, 0.0 for GRPO. GRPO with beta 0 builds "
            "no reference model and skips its forward pass every step; above 0 with method "
            "Full it loads a second copy of the model "
            "(https://huggingface.co/docs/trl/grpo_trainer).",
        ),
    )
    max_prompt_length: int = Field(512, ge=8, le=131072, description="DPO/ORPO/GRPO prompts.")
    num_generations: int = Field(4, ge=2, le=64, description="GRPO completions per prompt.")
    max_completion_length: int = Field(256, ge=1, le=32768, description="GRPO completions.")

    @model_validator(mode="after")
    def _max_steps_is_not_zero(self) -> Hyperparameters:
        if self.max_steps == 0:
            raise field_error("max_steps", "max_steps must be -1 (train for `epochs`) or >= 1")
        return self


class ResolvedHyperparameters(Hyperparameters):
    """Hyperparameters with every default applied: what the trainer trains with."""

    learning_rate: float
    epochs: float
    lr_scheduler_type: SchedulerType
    warmup_ratio: float
    weight_decay: float
    beta: float
    eval_batch_size: int


def resolve_hyperparameters(
    hyperparameters: Hyperparameters, *, trainer_type: TrainerType, method: Method
) -> ResolvedHyperparameters:
    """The hyperparameters a job trains with: each null field takes its default for the
    trainer type and method, each given field is kept as given (even when it equals one)."""
    values = hyperparameters.model_dump()
    for name in DEFAULTED_FIELDS:
        if values[name] is None:
            values[name] = default_for(name, trainer_type.value, method.value)
    if values["eval_batch_size"] is None:
        batch = hyperparameters.batch_size
        values["eval_batch_size"] = max(batch, min(EVAL_BATCH_CAP, 2 * batch))
    return ResolvedHyperparameters.model_validate(values)


# transformers' TrainingArguments.per_device_eval_batch_size default, which TRL's configs keep.
EVAL_BATCH_CAP = 8


class ExportConfig(Contract):
    format: ExportFormat = Field(ExportFormat.ADAPTER, description="adapter or merged weights.")
    destination: Destination = Destination.GCS
    hf_repo_id: HfRepoId | None = Field(None, description="`owner/name`, needed for hfhub.")
    include_gguf: bool = Field(False, description="Also export GGUF files.")
    gguf_quantization: GgufQuantization | list[GgufQuantization] | None = Field(
        None, description="One quantization or a list; q8_0 when include_gguf and unset."
    )

    @field_validator("hf_repo_id")
    @classmethod
    def _no_double_dots(cls, value: str | None) -> str | None:
        if value is not None and (has_dot_segments(value) or "--" in value):
            raise ValueError("hf_repo_id must not contain '..' or '--'")
        return value

    @model_validator(mode="after")
    def _destination_rules(self) -> ExportConfig:
        if self.destination is Destination.HFHUB and not self.hf_repo_id:
            raise field_error("hf_repo_id", "destination 'hfhub' needs hf_repo_id ('owner/name')")
        if self.destination is Destination.GCS and self.hf_repo_id:
            raise field_error("hf_repo_id", "hf_repo_id is only used with destination 'hfhub'")
        if self.gguf_quantization is not None and not self.include_gguf:
            raise field_error("gguf_quantization", "gguf_quantization needs include_gguf: true")
        if isinstance(self.gguf_quantization, list) and (
            not self.gguf_quantization
            or len(set(self.gguf_quantization)) != len(self.gguf_quantization)
        ):
            raise field_error("gguf_quantization", "give at least one quantization, each once")
        return self

    @property
    def quantizations(self) -> list[GgufQuantization]:
        """The GGUF files to write, in order; empty when GGUF is off."""
        if not self.include_gguf:
            return []
        if self.gguf_quantization is None:
            return [GgufQuantization.Q8_0]
        if isinstance(self.gguf_quantization, list):
            return list(self.gguf_quantization)
        return [self.gguf_quantization]


class EvalConfig(Contract):
    eval_strategy: EvalStrategy = EvalStrategy.NO
    eval_steps: int = Field(
        50, ge=1, le=MAX_STEPS, description="Steps between evaluations (strategy steps)."
    )
    compute_eval_metrics: bool = Field(True, description="Token accuracy and perplexity.")
    batch_eval_metrics: bool = Field(
        False,
        description="Accepted for the seed API's requests; no effect: evaluation always sums "
        "per-token figures batch by batch (never the eval set's logits), so true and false "
        "give the same exact figures.",
    )
    eval_holdout_fraction: float = Field(
        0.1, gt=0, le=0.5, description="Held-out share of train when there is no eval split."
    )
    samples: int = Field(
        DEFAULT_SAMPLES,
        ge=0,
        le=MAX_SAMPLES,
        description="Prompts answered at the end of training by the base and the fine-tuned "
        "model (greedy, through the chat template), side by side in `GET "
        "/jobs/{job_id}/samples`: the first distinct prompts of the eval split (else of "
        "train), or every one of `sample_prompts`. 0 turns all of it off: no samples, no "
        "`metrics.eval_scores`, no generation. Applies when eval_config is null too. "
        + SAMPLE_COST,
    )
    sample_prompts: (
        list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_SAMPLE_PROMPT_CHARS)]]
        | None
    ) = Field(
        None,
        min_length=1,
        max_length=MAX_SAMPLES,
        description="Short user prompts to answer instead of the dataset's (one user turn "
        f"each, at most {MAX_SAMPLES} of at most {MAX_SAMPLE_PROMPT_CHARS} characters).",
    )
    sample_max_new_tokens: int = Field(
        DEFAULT_SAMPLE_NEW_TOKENS,
        ge=1,
        le=MAX_SAMPLE_NEW_TOKENS,
        description="The longest answer generated per prompt and model, in tokens; the "
        "samples' GPU time grows with it linearly (the bound is under `samples`).",
    )
    scored_rows: int = Field(
        DEFAULT_SCORED_ROWS,
        ge=0,
        le=MAX_SCORED_ROWS,
        description="Eval rows with a reference answer (SFT: the last assistant turn; GRPO: "
        "the reference column) whose generated answers the built-in scorers (exact_match, "
        "numeric_match, format) score for the base and the fine-tuned model: "
        "`metrics.eval_scores`. Needs an eval split (evaluation on) and `samples` above 0; "
        "0 scores nothing. Shares the generation of the samples where the rows are the same; "
        "each 8 distinct rows more cost one more batch per model (the bound is under `samples`).",
    )

    @model_validator(mode="after")
    def _prompts_need_samples(self) -> EvalConfig:
        if self.sample_prompts is not None and self.samples == 0:
            raise field_error(
                "sample_prompts", "samples is 0 (off): leave sample_prompts out, or raise samples"
            )
        return self


class WandbConfig(Contract):
    api_key: SecretStr | None = Field(None, description="Stored in Secret Manager only.")
    api_key_secret: SecretReference | None = Field(None, description="An existing secret.")
    project: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
    entity: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,128}$")] | None = None

    @model_validator(mode="after")
    def _one_key(self) -> WandbConfig:
        if (self.api_key is None) == (self.api_key_secret is None):
            raise field_error("api_key", "give exactly one of api_key or api_key_secret")
        return self


class RewardConfig(Contract):
    functions: list[RewardFunction] = Field(..., min_length=1, description="Rewards to sum.")
    weights: list[Annotated[float, Field(ge=-MAX_REWARD_WEIGHT, le=MAX_REWARD_WEIGHT)]] | None = (
        Field(None, description="One weight per function.")
    )
    reference_column: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    ] = "answer"

    @model_validator(mode="after")
    def _weights_match(self) -> RewardConfig:
        if len(set(self.functions)) != len(self.functions):
            raise field_error("functions", "each reward function may appear once")
        if self.weights is not None and len(self.weights) != len(self.functions):
            raise field_error("weights", "give one weight per reward function")
        return self


# Gemma checkpoints known to have no vision tower; gs:// snapshots are checked
# by the trainer when it reads the model's config.
TEXT_ONLY_MODEL = re.compile(
    r"(^|/)(gemma-(2b|7b|1\.1|2-|3-1b|3-270m)|codegemma|recurrentgemma|gemma-2-)", re.IGNORECASE
)
_METHOD_ALIASES = {method.value.lower(): method.value for method in Method}


class ComputeConfig(Contract):
    tier: str = Field(
        "auto",
        pattern=r"^[a-z][a-z0-9-]{0,30}$",
        description="The GPU tier to train on (`GET /tiers` lists them), or `auto`: the "
        "smallest tier whose GPUs hold the job's memory estimate. A named tier that cannot "
        "hold it is refused with the estimate.",
    )


class TrainingConfig(Contract):
    base_model_id: str = Field(
        ..., description="A Hub id (`google/gemma-3-1b-it`) or a `gs://bucket/prefix/` snapshot."
    )
    provider: Provider = Provider.HUGGINGFACE
    method: Method = Method.QLORA
    trainer_type: TrainerType = TrainerType.SFT
    modality: Modality = Modality.TEXT
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    export_config: ExportConfig = Field(default_factory=ExportConfig)
    eval_config: EvalConfig | None = Field(None, description="Evaluation; off when null.")
    wandb_config: WandbConfig | None = Field(None, description="Weights & Biases logging.")
    reward_config: RewardConfig | None = Field(None, description="GRPO rewards (GRPO only).")
    compute: ComputeConfig = Field(
        default_factory=ComputeConfig, description="Where the job trains: its GPU tier."
    )
    from_job: str | None = Field(
        None,
        pattern=FROM_JOB_PATTERN,
        description="Continue from an earlier job of yours: `<job_id>` starts from its final "
        "adapter (LoRA, QLoRA) or weights (Full), `<job_id>:<step>` from one of its "
        "checkpoints (`GET /jobs/{job_id}/checkpoints`). The base model, method and modality "
        "must be the earlier job's; the trainer type may be the same, or any after an SFT "
        "job (SFT then DPO, ORPO or GRPO). An adapter continues with its own LoRA rank, alpha "
        "and target modules.",
    )

    @property
    def parent(self) -> tuple[str, int | None] | None:
        """(job id, checkpoint step or None for the final model) of `from_job`."""
        if self.from_job is None:
            return None
        job_id, _, step = self.from_job.partition(":")
        return job_id, int(step) if step else None

    @field_validator("base_model_id")
    @classmethod
    def _model_id_shape(cls, value: str) -> str:
        pattern = GCS_PREFIX_PATTERN if value.startswith("gs://") else HF_MODEL_PATTERN
        if re.fullmatch(pattern, value) is None or has_dot_segments(value.removeprefix("gs://")):
            raise ValueError(
                "base_model_id must be a Hub id ('owner/name') or 'gs://bucket/prefix/'"
            )
        if value.startswith("gs://") and not value.removeprefix("gs://").partition("/")[2]:
            # A whole bucket is no model folder: the trainer would read the bucket's root.
            raise ValueError(
                "base_model_id 'gs://bucket' needs the folder holding the model's config.json: "
                "'gs://bucket/prefix/'"
            )
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _method_any_case(cls, value: Any) -> Any:
        return _METHOD_ALIASES.get(value.lower(), value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _rules_across_sections(self) -> TrainingConfig:
        if self.modality is Modality.VISION and TEXT_ONLY_MODEL.search(self.base_model_id):
            raise field_error(
                "base_model_id",
                f"{self.base_model_id} has no vision tower; use a Gemma 3 4B+ model",
            )
        if self.trainer_type is TrainerType.GRPO and self.reward_config is None:
            raise field_error("reward_config", "trainer_type 'grpo' needs reward_config.functions")
        if self.trainer_type is not TrainerType.GRPO and self.reward_config is not None:
            raise field_error("reward_config", "reward_config is only used by trainer_type 'grpo'")
        hp = self.hyperparameters
        if self.trainer_type in (TrainerType.DPO, TrainerType.ORPO) and hp.beta == 0:
            raise field_error(
                "hyperparameters.beta",
                f"trainer_type '{self.trainer_type.value}' needs beta above 0 (0 learns no "
                "preference): omit it for the default 0.1",
            )
        if self.trainer_type is not TrainerType.SFT and hp.max_prompt_length >= hp.max_seq_length:
            raise field_error(
                "hyperparameters.max_prompt_length",
                "max_prompt_length must be below max_seq_length",
            )
        if (
            self.trainer_type is TrainerType.GRPO
            and (hp.batch_size * hp.gradient_accumulation_steps) % hp.num_generations
        ):
            raise field_error(
                "hyperparameters.num_generations",
                "batch_size * gradient_accumulation_steps must be a multiple of num_generations",
            )
        if hp.load_best_model_at_end:
            _check_best_model_evaluation(hp, self.eval_config)
        if self.method is Method.FULL and self.export_config.format is ExportFormat.MERGED:
            raise field_error(
                "export_config.format", "method 'Full' trains all weights: use format 'adapter'"
            )
        return self

    @property
    def checkpoints_kept(self) -> int:
        """How many of the newest checkpoints stay (save_total_limit, or its default)."""
        family = "adapter" if self.method.uses_adapter else "full"
        return self.hyperparameters.save_total_limit or CHECKPOINTS_KEPT[family]

    @property
    def resolved_hyperparameters(self) -> ResolvedHyperparameters:
        """The hyperparameters with the defaults of this trainer type and method applied."""
        return resolve_hyperparameters(
            self.hyperparameters, trainer_type=self.trainer_type, method=self.method
        )


def _check_best_model_evaluation(hp: Hyperparameters, evaluation: EvalConfig | None) -> None:
    """What transformers' Trainer checks when it is built, refused here rather than on the
    GPU: the best checkpoint is known only where an evaluation falls on each save."""
    field = "hyperparameters.load_best_model_at_end"
    strategy = evaluation.eval_strategy.value if evaluation else "no"
    if strategy == "no" or strategy != hp.save_strategy.value:
        raise field_error(
            field,
            "load_best_model_at_end needs an evaluation at every checkpoint: set "
            f"eval_config.eval_strategy to save_strategy ('{hp.save_strategy.value}'), "
            f"not '{strategy}'",
        )
    if strategy == "steps" and evaluation and hp.save_steps % evaluation.eval_steps:
        raise field_error(
            field,
            f"load_best_model_at_end needs save_steps ({hp.save_steps}) to be a multiple of "
            f"eval_config.eval_steps ({evaluation.eval_steps})",
        )


class TrainRequest(Contract):
    """The body of `POST /train`, and a message another service may publish."""

    processed_dataset_id: SegmentId = Field(
        ..., description="Folder under processed_datasets/ in the data bucket."
    )
    hf_token: SecretStr | None = Field(None, description="Stored in Secret Manager only.")
    hf_token_secret: SecretReference | None = Field(
        None, description="An existing Secret Manager secret version holding the Hub token."
    )
    job_name: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        None, description="A display name; not used in any path."
    )
    request_id: IdempotencyKey | None = Field(
        None, description="Makes a retried submit return the same job (like Idempotency-Key)."
    )
    training_config: TrainingConfig

    @field_validator("job_name")
    @classmethod
    def _printable_name(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError("job_name must be printable text")
        return value

    @model_validator(mode="after")
    def _token_rules(self) -> TrainRequest:
        if self.hf_token is not None and self.hf_token_secret is not None:
            raise field_error("hf_token", "give hf_token or hf_token_secret, not both")
        if self.hf_token is not None and not 1 <= len(self.hf_token.get_secret_value()) <= 512:
            raise field_error("hf_token", "hf_token must be 1 to 512 characters")
        export = self.training_config.export_config
        if export.destination is Destination.HFHUB and not self.has_hf_token:
            raise field_error("hf_token", "destination 'hfhub' needs hf_token or hf_token_secret")
        return self

    @property
    def has_hf_token(self) -> bool:
        return self.hf_token is not None or self.hf_token_secret is not None

    def fingerprint(self) -> str:
        """A hash of what the request asks for, without secret values or the request id."""
        data = self.redacted()
        data.pop("request_id", None)
        data["has_hf_token"] = self.has_hf_token
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def redacted(self, secret_references: dict[str, str] | None = None) -> dict[str, Any]:
        """The request as JSON data with every secret value removed.

        Secret values are replaced by the references they were stored under, so
        the result is what may be written to GCS, Firestore or a message.
        """
        references = secret_references or {}
        data = self.model_dump(mode="json", exclude={"hf_token"})
        if self.hf_token is not None:
            data["hf_token_secret"] = references.get("hf_token")
        wandb = data["training_config"].get("wandb_config")
        if wandb is not None:
            wandb.pop("api_key", None)
            if self.training_config.wandb_config and self.training_config.wandb_config.api_key:
                wandb["api_key_secret"] = references.get("wandb_api_key")
        return data


class JobReference(Contract):
    """What submit publishes on `training-requests`: a job already queued in Firestore."""

    job_id: SegmentId
    kind: Literal["job_reference"] = "job_reference"


def format_location(location: tuple[Any, ...], context: dict[str, Any] | None) -> str:
    """`training_config.hyperparameters.beta` from a pydantic error location.

    Pydantic names the member of a plain union it tried (`str-enum[GgufQuantization]`,
    `list[...]`) as a location part; those are not fields and are left out.
    """
    parts = [str(part) for part in location if not (isinstance(part, str) and "[" in part)]
    if context and context.get("field"):
        parts.extend(str(context["field"]).split("."))
    return ".".join(parts)


def describe_validation_error(
    error: ValidationError, *, tagged_union: bool = False
) -> InvalidRequestError:
    """One `InvalidRequestError` naming the first bad field, with all problems attached.

    With `tagged_union`, the data was validated against a discriminated union whose
    tag pydantic puts first in every location: it is not a field and is left out.
    """
    root = _contract_named(error.title)
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        location = item["loc"][1:] if tagged_union else item["loc"]
        message = _plain_message(item)
        if item["type"] == "extra_forbidden" and location:
            message += _suggestion(str(location[-1]), _model_at(root, location[:-1]))
        problems.append({"field": format_location(location, item.get("ctx")), "message": message})
    first = problems[0] if problems else {"field": "", "message": "invalid request"}
    return InvalidRequestError(
        f"{first['field']}: {first['message']}" if first["field"] else first["message"],
        field=first["field"] or None,
        problems=problems,
    )


def _contract_named(name: str) -> type[BaseModel] | None:
    """The request model pydantic names in an error's title (None for a union or adapter)."""
    pending: list[type[BaseModel]] = [Contract]
    while pending:
        model = pending.pop()
        if model.__name__ == name:
            return model
        pending.extend(model.__subclasses__())
    return None


def _model_at(root: type[BaseModel] | None, location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model whose fields sit at `location` below `root` (list indexes skipped)."""
    model = root
    for part in location:
        if model is None:
            return None
        if isinstance(part, int) or "[" in str(part):  # a list index, or a union member's tag
            continue
        field = model.model_fields.get(str(part)) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        model = _first_model(field.annotation) if field is not None else None
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        if (found := _first_model(argument)) is not None:
            return found
    return None


def _suggestion(name: str, model: type[BaseModel] | None) -> str:
    """`; did you mean 'learning_rate'?` for a misspelt field, else nothing."""
    if model is None:
        return ""
    known = [field.alias or key for key, field in model.model_fields.items()]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _plain_message(item: Any) -> str:
    if item["type"] == "extra_forbidden":
        return "unknown field"
    return str(item["msg"]).removeprefix("Value error, ")


def parse_train_request(data: Any) -> TrainRequest:
    """Validate request data, raising `InvalidRequestError` that names the field."""
    try:
        return TrainRequest.model_validate(data)
    except ValidationError as error:
        raise describe_validation_error(error) from None
