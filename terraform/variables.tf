# Inputs. Only project_id and prefix have no default; terraform.tfvars.example shows a full set.

# --- Where and under which names ------------------------------------------------------------

variable "project_id" {
  description = "ID of the existing GCP project to deploy into (billing enabled)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project ID: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of every regional resource. Must offer Cloud Run GPUs of trainer_gpu.type (e.g. us-central1, europe-west4 for nvidia-l4)."
  type        = string
  default     = "us-central1"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a GCP region name such as us-central1."
  }
}

variable "prefix" {
  description = "Prefix of every resource name, so several deployments can share a project. Also part of the bucket names, which are global: prefix + project ID keeps them unique."
  type        = string
  validation {
    # 16 characters at most: service account ids are `<prefix>-<role>` and may not exceed 30.
    condition     = can(regex("^[a-z][a-z0-9-]{0,14}[a-z0-9]$", var.prefix))
    error_message = "prefix must be 1-16 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels (system and deployment are always added)."
  type        = map(string)
  default     = {}
  validation {
    condition = alltrue([
      for key, value in var.labels :
      can(regex("^[a-z][a-z0-9_-]{0,62}$", key)) && can(regex("^[a-z0-9_-]{0,63}$", value))
    ])
    error_message = "Label keys must start with a lowercase letter; keys and values may hold lowercase letters, digits, '_' and '-' (63 characters at most)."
  }
}

variable "deletion_protection" {
  description = "Protect the data: buckets refuse to be destroyed while they hold objects, the Firestore database and the trainer job refuse deletion. Set false only for throwaway deployments."
  type        = bool
  default     = true
}

# --- Who may call the system ----------------------------------------------------------------

variable "api_invoker_members" {
  description = "Principals allowed to call the HTTP API (submit, status, delete), e.g. [\"group:ml-team@example.com\"]. The functions are private: nobody else can call them."
  type        = list(string)
  default     = []
  validation {
    condition = alltrue([
      for member in var.api_invoker_members :
      can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+$", member))
    ])
    error_message = "Members are IAM principals (user:, group:, serviceAccount:, domain:, principal:, principalSet:); allUsers and allAuthenticatedUsers are refused: the API must stay private."
  }
}

variable "request_publisher_members" {
  description = "Principals (other services) allowed to publish training requests on the training-requests topic (roles/pubsub.publisher on that topic only). They are trusted to name the owner of each job in the message's `owner` attribute, which nothing can check against a token: list only services that authenticate their own users. Jobs they publish without an owner share one per-owner slot allowance."
  type        = list(string)
  default     = []
  validation {
    condition = alltrue([
      for member in var.request_publisher_members :
      can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+$", member))
    ])
    error_message = "Members are IAM principals (user:, group:, serviceAccount:, ...); allUsers and allAuthenticatedUsers are refused."
  }
}

variable "notification_subscriber_members" {
  description = "Principals allowed to attach subscriptions to the job-notifications topic (terminal transitions of jobs)."
  type        = list(string)
  default     = []
  validation {
    condition = alltrue([
      for member in var.notification_subscriber_members :
      can(regex("^(user|group|serviceAccount|domain|principal|principalSet):.+$", member))
    ])
    error_message = "Members are IAM principals (user:, group:, serviceAccount:, ...); allUsers and allAuthenticatedUsers are refused."
  }
}

variable "api_ingress" {
  description = "Ingress of the HTTP API functions: ALLOW_ALL (reachable from the internet, IAM still required) or ALLOW_INTERNAL_AND_GCLB (only from the VPC or a load balancer). The event handlers are always internal-only."
  type        = string
  default     = "ALLOW_ALL"
  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_AND_GCLB", "ALLOW_INTERNAL_ONLY"], var.api_ingress)
    error_message = "api_ingress must be ALLOW_ALL, ALLOW_INTERNAL_AND_GCLB or ALLOW_INTERNAL_ONLY."
  }
}

# --- Behaviour of the service (environment of the functions) --------------------------------

variable "owner_scoping" {
  description = "Limit list/get/delete to the caller's own jobs (the job's owner is the authenticated caller)."
  type        = bool
  default     = true
}

variable "signed_url_ttl_seconds" {
  description = "Lifetime of the signed download URLs the status API returns."
  type        = number
  default     = 900
  validation {
    condition     = var.signed_url_ttl_seconds >= 60 && var.signed_url_ttl_seconds <= 604800
    error_message = "signed_url_ttl_seconds must be between 60 and 604800 (V4 signed URLs live at most 7 days)."
  }
}

variable "max_concurrent_jobs" {
  description = "How many trainer executions may run at once; dispatch leaves further requests queued. Keep it within the project's Cloud Run GPU quota."
  type        = number
  default     = 4
  validation {
    condition     = var.max_concurrent_jobs >= 1 && var.max_concurrent_jobs <= 1000 && floor(var.max_concurrent_jobs) == var.max_concurrent_jobs
    error_message = "max_concurrent_jobs must be a whole number between 1 and 1000."
  }
}

variable "max_concurrent_jobs_per_owner" {
  description = "How many of those one caller's jobs may run at once (0: no per-caller limit), so that one person's batch of jobs cannot take every GPU. Counts only jobs submitted with a caller identity."
  type        = number
  default     = 0
  validation {
    condition     = var.max_concurrent_jobs_per_owner >= 0 && var.max_concurrent_jobs_per_owner <= 1000 && floor(var.max_concurrent_jobs_per_owner) == var.max_concurrent_jobs_per_owner
    error_message = "max_concurrent_jobs_per_owner must be a whole number between 0 and 1000."
  }
}

variable "reconcile_stale_seconds" {
  description = "How long after its execution ended without a final event reconcile marks a job failed."
  type        = number
  default     = 900
  validation {
    condition     = var.reconcile_stale_seconds >= 30
    error_message = "reconcile_stale_seconds must be at least 30."
  }
}

variable "reconcile_stalled_seconds" {
  description = "A trainer execution still running but silent this long is cancelled and its job failed as hung, instead of holding a GPU until trainer_task_timeout_seconds (0: never). Set it above the longest silent phase: the trainer reports every 30 s while training, but a large model's download or export can be quiet for a long time."
  type        = number
  default     = 0
  validation {
    condition     = var.reconcile_stalled_seconds == 0 || var.reconcile_stalled_seconds >= 1800
    error_message = "reconcile_stalled_seconds must be 0 (never) or at least 1800."
  }
}

variable "reconcile_every_minutes" {
  description = "How often Cloud Scheduler calls reconcile."
  type        = number
  default     = 5
  validation {
    condition     = contains([1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30], var.reconcile_every_minutes)
    error_message = "reconcile_every_minutes must divide an hour: 1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30."
  }
}

variable "secret_prefix" {
  description = "Prefix of the per-job Secret Manager secrets (SECRET_PREFIX). IAM grants on secrets are conditioned on it: change it only with no job in flight."
  type        = string
  default     = "tuning-"
  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,40}$", var.secret_prefix))
    error_message = "secret_prefix must be 1-40 letters, digits, '_' or '-' (tuning/settings.py accepts the same)."
  }
}

variable "allowed_base_model_locations" {
  description = "Cloud Storage locations, besides the models bucket's base_models/ prefix (where `tuning models upload` puts models), that a job's gs:// base_model_id may name (ALLOWED_BASE_MODEL_LOCATIONS), as gs://bucket/ or gs://bucket/prefix/. Prefixes holding jobs' outputs, checkpoints and configs stay refused even inside a listed location. The trainer account needs read access to each (docs/deploy.md)."
  type        = list(string)
  default     = []
  validation {
    condition = alltrue([
      for location in var.allowed_base_model_locations :
      can(regex("^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]/([A-Za-z0-9_.=+-]+/)*$", location))
      && !can(regex("(^gs://[^/]*\\.\\.|/\\.\\.?/)", location))
    ])
    error_message = "Each allowed_base_model_locations entry must be gs://bucket/ or gs://bucket/prefix/, ending with '/', without '.' or '..' segments (tuning/tenancy.py accepts the same)."
  }
}

variable "jobs_collection" {
  description = "Firestore collection of the job records (JOBS_COLLECTION)."
  type        = string
  default     = "training_jobs"
  validation {
    condition     = can(regex("^[A-Za-z][A-Za-z0-9_-]{0,99}$", var.jobs_collection))
    error_message = "jobs_collection must be a plain collection id (letters, digits, '_' or '-')."
  }
}

# --- Functions ------------------------------------------------------------------------------

variable "function_source_dir" {
  description = "Folder holding one <function>.zip per function, as `make package` (tools/package_functions.py) writes them. Relative paths are relative to this folder (terraform/)."
  type        = string
  default     = "../build/functions"
}

variable "function_max_instances" {
  description = "Upper bound on instances of each function: caps cost and the load on Firestore."
  type        = number
  default     = 20
  validation {
    condition     = var.function_max_instances >= 1 && var.function_max_instances <= 1000
    error_message = "function_max_instances must be between 1 and 1000."
  }
}

# --- Pub/Sub delivery -----------------------------------------------------------------------

variable "dispatch_max_delivery_attempts" {
  description = "Deliveries of a training request before it is dead-lettered. Dispatch asks for redelivery while every GPU slot is busy, so this bounds how long a request may wait for capacity (with the 10-minute maximum backoff, 100 attempts are roughly 16 hours)."
  type        = number
  default     = 100
  validation {
    condition     = var.dispatch_max_delivery_attempts >= 5 && var.dispatch_max_delivery_attempts <= 100
    error_message = "Pub/Sub accepts 5 to 100 delivery attempts."
  }
}

variable "event_max_delivery_attempts" {
  description = "Deliveries of a lifecycle event to on_job_event before it is dead-lettered."
  type        = number
  default     = 10
  validation {
    condition     = var.event_max_delivery_attempts >= 5 && var.event_max_delivery_attempts <= 100
    error_message = "Pub/Sub accepts 5 to 100 delivery attempts."
  }
}

variable "dead_letter_retention_days" {
  description = "How long dead-lettered messages are kept for inspection and replay."
  type        = number
  default     = 7
  validation {
    condition     = var.dead_letter_retention_days >= 1 && var.dead_letter_retention_days <= 31
    error_message = "Pub/Sub retains messages 1 to 31 days."
  }
}

# --- Storage --------------------------------------------------------------------------------

variable "bucket_location" {
  description = "Location of the buckets; null means the region (keeps data next to the trainer, no cross-region egress)."
  type        = string
  default     = null
}

variable "checkpoint_retention_days" {
  description = "Days after which objects under checkpoints/ in the models bucket are deleted (a finished job no longer needs them)."
  type        = number
  default     = 7
  validation {
    condition     = var.checkpoint_retention_days >= 1
    error_message = "checkpoint_retention_days must be at least 1."
  }
}

variable "artifact_retention_days" {
  description = "Days after which exported artifacts (adapters, merged models, GGUF files, sample answers) are deleted; null keeps them until their job is deleted."
  type        = number
  default     = null
  validation {
    condition     = var.artifact_retention_days == null ? true : var.artifact_retention_days >= 1
    error_message = "artifact_retention_days must be null or at least 1."
  }
}

variable "config_noncurrent_retention_days" {
  description = "Days a replaced or deleted version of a job config stays recoverable in the (versioned) config bucket."
  type        = number
  default     = 30
  validation {
    condition     = var.config_noncurrent_retention_days >= 1
    error_message = "config_noncurrent_retention_days must be at least 1."
  }
}

variable "firestore_location" {
  description = "Location of the Firestore database (a region such as us-central1, or a multi-region such as nam5); null means the region."
  type        = string
  default     = null
}

variable "create_firestore_database" {
  description = "Create the project's (default) Firestore database. Set false when the project already has one (the jobs then live in it)."
  type        = bool
  default     = true
}

# --- Trainer --------------------------------------------------------------------------------

variable "trainer_image" {
  description = "Trainer container image. null means <region>-docker.pkg.dev/<project>/<prefix>-trainer/trainer:latest, where terraform/cloudbuild.trainer.yaml pushes it; pin a digest (…/trainer@sha256:…) for reproducible deployments."
  type        = string
  default     = null
}

# The GPUs Cloud Run jobs offer, the least CPU and memory each must be paired with, and the
# launch stage it needs (preview features need BETA), from "Supported GPU types" on
# https://cloud.google.com/run/docs/configuring/jobs/gpu: an L4 needs "a minimum of 4 CPU
# and 16 GiB of memory"; the NVIDIA RTX PRO 6000 Blackwell is in Preview and needs "a
# minimum of 20 CPU and 80 GiB of memory". tools/tfcheck's CKV_TUNING_3 holds the same
# figures and checks the planned job against them.
locals {
  cloud_run_gpu_types = {
    "nvidia-l4"           = { min_cpu = 4, min_memory_gib = 16, launch_stage = "GA" }
    "nvidia-rtx-pro-6000" = { min_cpu = 20, min_memory_gib = 80, launch_stage = "BETA" }
  }
}

variable "trainer_gpu" {
  description = "GPU of the trainer: its Cloud Run accelerator type and the CPU and memory to pair with it. nvidia-l4 needs at least 4 CPU and 16Gi (8 CPU and 32Gi is the sizing for fine-tuning); nvidia-rtx-pro-6000 (preview: trainer_launch_stage = BETA) at least 20 CPU and 80Gi."
  type = object({
    type   = optional(string, "nvidia-l4")
    cpu    = optional(string, "8")
    memory = optional(string, "32Gi")
  })
  default  = {}
  nullable = false
  validation {
    condition     = contains(keys(local.cloud_run_gpu_types), var.trainer_gpu.type)
    error_message = "trainer_gpu.type must be a Cloud Run GPU: ${join(" or ", keys(local.cloud_run_gpu_types))}."
  }
  # The rules below judge only a known type (an unknown one is reported by the rule above):
  # try() falls back to "passes" exactly when the type is not in the table.
  validation {
    condition = try(
      can(regex("^[0-9]+$", var.trainer_gpu.cpu)) && tonumber(var.trainer_gpu.cpu) >= local.cloud_run_gpu_types[var.trainer_gpu.type].min_cpu,
      !contains(keys(local.cloud_run_gpu_types), var.trainer_gpu.type)
    )
    error_message = "trainer_gpu.cpu must be a whole CPU count of at least ${try(local.cloud_run_gpu_types[var.trainer_gpu.type].min_cpu, 4)}: Cloud Run's minimum with one ${var.trainer_gpu.type}."
  }
  validation {
    condition = try(
      can(regex("^[0-9]+Gi$", var.trainer_gpu.memory)) && tonumber(trimsuffix(var.trainer_gpu.memory, "Gi")) >= local.cloud_run_gpu_types[var.trainer_gpu.type].min_memory_gib,
      !contains(keys(local.cloud_run_gpu_types), var.trainer_gpu.type)
    )
    error_message = "trainer_gpu.memory must be written in Gi and be at least ${try(local.cloud_run_gpu_types[var.trainer_gpu.type].min_memory_gib, 16)}Gi: Cloud Run's minimum with one ${var.trainer_gpu.type}."
  }
  validation {
    condition = try(
      local.cloud_run_gpu_types[var.trainer_gpu.type].launch_stage == "GA" || var.trainer_launch_stage == "BETA",
      true
    )
    error_message = "trainer_gpu.type ${var.trainer_gpu.type} is in preview on Cloud Run: set trainer_launch_stage = \"BETA\"."
  }
}

# The usable memory of one GPU of each Cloud Run type, as the functions' placement counts it
# (tuning/tiers.py CLOUD_RUN_GPU_MEMORY_GIB; tests/terraform/test_contract.py keeps them equal).
locals {
  cloud_run_gpu_memory_gib = {
    "nvidia-l4"           = 22.4
    "nvidia-rtx-pro-6000" = 95.5
  }
}

# The GPUs a Vertex AI custom job can attach (MachineSpec.acceleratorType) and the machine
# types each comes on, from "Specifying GPUs" on
# https://cloud.google.com/vertex-ai/docs/training/configure-compute#specifying_gpus and
# Compute Engine's accelerator-optimized machines (A3 High: H100 80GB, A3 Mega: H100 Mega,
# A3 Ultra: H200, A2 Ultra: A100 80GB, A2 Standard: A100 40GB, G2: L4). The memory of one
# GPU is what the functions' placement counts (tuning/tiers.py VERTEX_GPU_MEMORY_GIB, kept
# equal by tests/terraform/test_contract.py): the card's total as nvidia-smi reports it, in
# GiB rounded down (H200 143771 MiB, H100 81559 MiB, A100 80GB 81920 MiB, A100 40GB 40960
# MiB, L4 23034 MiB, as CLOUD_RUN_GPU_MEMORY_GIB counts the Cloud Run cards).
locals {
  vertex_gpu_memory_gib = {
    "NVIDIA_H200_141GB"     = 140.4
    "NVIDIA_H100_MEGA_80GB" = 79.6
    "NVIDIA_H100_80GB"      = 79.6
    "NVIDIA_A100_80GB"      = 80
    "NVIDIA_TESLA_A100"     = 40
    "NVIDIA_L4"             = 22.4
  }
  # The machine types that carry each accelerator (a pattern over the name) and what a
  # message shows of them.
  vertex_gpu_machines = {
    "NVIDIA_H200_141GB"     = { pattern = "^a3-ultragpu-8g$", shown = "a3-ultragpu-8g" }
    "NVIDIA_H100_MEGA_80GB" = { pattern = "^a3-megagpu-8g$", shown = "a3-megagpu-8g" }
    "NVIDIA_H100_80GB"      = { pattern = "^a3-highgpu-[1248]g$", shown = "a3-highgpu-1g/2g/4g/8g" }
    "NVIDIA_A100_80GB"      = { pattern = "^a2-ultragpu-[1248]g$", shown = "a2-ultragpu-1g/2g/4g/8g" }
    "NVIDIA_TESLA_A100"     = { pattern = "^a2-(highgpu-[1248]g|megagpu-16g)$", shown = "a2-highgpu-1g/2g/4g/8g, a2-megagpu-16g" }
    "NVIDIA_L4"             = { pattern = "^g2-standard-(4|8|12|16|24|32|48|96)$", shown = "g2-standard-4 to -96" }
  }
  # GPUs per machine: an A2 or A3 machine names its count (a3-highgpu-8g: 8); G2's do not.
  g2_machine_gpu_count = {
    "g2-standard-4"  = 1, "g2-standard-8" = 1, "g2-standard-12" = 1, "g2-standard-16" = 1,
    "g2-standard-24" = 2, "g2-standard-32" = 1, "g2-standard-48" = 4, "g2-standard-96" = 8,
  }
  # What a Cloud Run tier that leaves cpu or memory unset gets.
  cloud_run_tier_defaults = { cpu = "8", memory = "32Gi" }
}

variable "gpu_tiers" {
  description = <<-EOT
    GPU tiers besides the default one (var.trainer_gpu, tier "default"). Each has a name (lower case, digits, dashes), an engine, a gpu_type, max_concurrent_jobs (its own capacity slots, default 1) and optionally task_timeout_seconds; a job names one in training_config.compute.tier, or `auto` picks the smallest whose memory estimate fits (README, GPU tiers).
    engine "cloudrun" (the default): a Cloud Run job with one GPU, <prefix>-trainer-<name>; gpu_type a Cloud Run GPU (nvidia-l4, nvidia-rtx-pro-6000), cpu and memory at least Cloud Run's minimums for it (default 8 and 32Gi), task_timeout_seconds at most trainer_task_timeout_seconds.
    engine "vertex": a Vertex AI custom job per execution; gpu_type a Vertex accelerator type (NVIDIA_H100_80GB, NVIDIA_A100_80GB, NVIDIA_TESLA_A100, NVIDIA_L4, ...), gpu_count (1-16) and machine_type (required, e.g. a3-highgpu-8g with 8 x NVIDIA_H100_80GB), optionally region (default: var.region) and task_timeout_seconds up to 604800 (7 days). Declaring one enables the Vertex AI API and its grants (terraform/README.md).
    allowed_callers (any engine, default ["*"]: every caller): who may train on the tier, as jobs record their owner: the email (or subject) of a caller's ID token, a publisher's owner attribute, or "*". Not IAM members: "user:", "group:" or "domain:" forms are refused, since a function cannot check group or domain membership from a token. Others are refused at submit (and auto never picks the tier for them); GET /tiers does not list it to them (docs/deploy.md).
  EOT
  type = list(object({
    name                 = string
    engine               = optional(string, "cloudrun")
    gpu_type             = string
    gpu_count            = optional(number, 1)
    cpu                  = optional(string) # Cloud Run only (local.cloud_run_tier_defaults when unset)
    memory               = optional(string) # Cloud Run only
    machine_type         = optional(string) # Vertex AI only, and required there
    region               = optional(string) # Vertex AI only
    max_concurrent_jobs  = optional(number, 1)
    task_timeout_seconds = optional(number)
    allowed_callers      = optional(list(string), ["*"])
  }))
  default  = []
  nullable = false
  validation {
    condition     = alltrue([for tier in var.gpu_tiers : can(regex("^[a-z][a-z0-9-]{0,30}$", tier.name)) && !contains(["default", "auto"], tier.name)])
    error_message = "gpu_tiers: each name must be lower case letters, digits and dashes (at most 31, starting with a letter), and neither \"default\" (var.trainer_gpu's tier) nor \"auto\" (a job's request to choose)."
  }
  validation {
    condition     = length(distinct([for tier in var.gpu_tiers : tier.name])) == length(var.gpu_tiers)
    error_message = "gpu_tiers: two tiers have the same name."
  }
  validation {
    condition     = alltrue([for tier in var.gpu_tiers : contains(["cloudrun", "vertex"], tier.engine)])
    error_message = "gpu_tiers: engine must be \"cloudrun\" (a Cloud Run job with one GPU) or \"vertex\" (a Vertex AI custom job on a multi-GPU machine)."
  }
  validation {
    condition     = alltrue([for tier in var.gpu_tiers : tier.max_concurrent_jobs >= 1 && tier.max_concurrent_jobs <= 1000 && floor(tier.max_concurrent_jobs) == tier.max_concurrent_jobs])
    error_message = "gpu_tiers: max_concurrent_jobs must be a whole number from 1 to 1000."
  }
  # allowed_callers as tuning/tiers.py GpuTier checks it: identities (printable ASCII without
  # spaces, at most 320 characters: tuning/ids.py IDENTITY_PATTERN) or "*", 1 to 1000 of them.
  validation {
    condition = alltrue([
      for tier in var.gpu_tiers : tier.allowed_callers != null && length(tier.allowed_callers) >= 1 && length(tier.allowed_callers) <= 1000
      && alltrue([for caller in coalesce(tier.allowed_callers, []) : can(regex("^[!-~]{1,320}$", caller))])
    ])
    error_message = "gpu_tiers: allowed_callers lists 1 to 1000 callers, each an identity as jobs record their owner (an email or subject, printable ASCII without spaces, at most 320 characters) or \"*\" for every caller; leave it unset for every caller."
  }
  validation {
    condition = alltrue([
      for tier in var.gpu_tiers : !anytrue([
        for caller in coalesce(tier.allowed_callers, []) : can(regex("^(user|group|domain|serviceAccount|principal|principalSet):", caller))
      ])
    ])
    error_message = "gpu_tiers: allowed_callers names callers as jobs record their owner (alice@example.com), not as IAM members (user:alice@example.com); group: and domain: cannot be checked from a caller's token: list the members' emails."
  }

  # --- engine "cloudrun" ---------------------------------------------------------------------
  validation {
    condition     = alltrue([for tier in var.gpu_tiers : tier.engine != "cloudrun" || contains(keys(local.cloud_run_gpu_types), tier.gpu_type)])
    error_message = "gpu_tiers: a cloudrun tier's gpu_type must be a Cloud Run GPU: ${join(" or ", keys(local.cloud_run_gpu_types))}."
  }
  validation {
    condition = alltrue([
      for tier in var.gpu_tiers : tier.engine != "cloudrun" || try(
        can(regex("^[0-9]+$", coalesce(tier.cpu, local.cloud_run_tier_defaults.cpu))) && tonumber(coalesce(tier.cpu, local.cloud_run_tier_defaults.cpu)) >= local.cloud_run_gpu_types[tier.gpu_type].min_cpu
        && can(regex("^[0-9]+Gi$", coalesce(tier.memory, local.cloud_run_tier_defaults.memory))) && tonumber(trimsuffix(coalesce(tier.memory, local.cloud_run_tier_defaults.memory), "Gi")) >= local.cloud_run_gpu_types[tier.gpu_type].min_memory_gib
        && (local.cloud_run_gpu_types[tier.gpu_type].launch_stage == "GA" || var.trainer_launch_stage == "BETA"),
        !contains(keys(local.cloud_run_gpu_types), tier.gpu_type)
      )
    ])
    error_message = "gpu_tiers: each cloudrun tier's cpu (whole CPUs) and memory (in Gi) must meet Cloud Run's minimum for its gpu_type (nvidia-l4: 4 CPU and 16Gi; nvidia-rtx-pro-6000: 20 CPU and 80Gi, and trainer_launch_stage = \"BETA\")."
  }
  validation {
    condition     = alltrue([for tier in var.gpu_tiers : tier.engine != "cloudrun" || (tier.gpu_count == 1 && tier.machine_type == null && tier.region == null)])
    error_message = "gpu_tiers: a cloudrun tier has gpu_count 1 (Cloud Run gives one GPU per instance), no machine_type and no region (its job runs in var.region); gpu_count above 1, machine_type and region are for engine \"vertex\"."
  }
  validation {
    condition     = alltrue([for tier in var.gpu_tiers : tier.engine != "cloudrun" || tier.task_timeout_seconds == null || try(tier.task_timeout_seconds >= 600 && tier.task_timeout_seconds <= var.trainer_task_timeout_seconds, false)])
    error_message = "gpu_tiers: a cloudrun tier's task_timeout_seconds must be from 600 to trainer_task_timeout_seconds (every Cloud Run tier's job has that task timeout)."
  }

  # --- engine "vertex" -----------------------------------------------------------------------
  validation {
    condition     = alltrue([for tier in var.gpu_tiers : tier.engine != "vertex" || contains(keys(local.vertex_gpu_memory_gib), tier.gpu_type)])
    error_message = "gpu_tiers: a vertex tier's gpu_type must be a Vertex AI accelerator type this configuration knows: ${join(", ", keys(local.vertex_gpu_memory_gib))}."
  }
  validation {
    condition     = alltrue([for tier in var.gpu_tiers : tier.engine != "vertex" || can(regex("^[a-z][a-z0-9-]{0,62}$", tier.machine_type))])
    error_message = "gpu_tiers: a vertex tier must name its machine_type, the Vertex AI machine that carries its GPUs (e.g. a3-highgpu-8g for 8 x NVIDIA_H100_80GB)."
  }
  # The two rules below judge a machine_type only against a known gpu_type, and only once
  # it is named (the rules above report the others): there, try() falls back to "passes".
  validation {
    condition = alltrue([
      for tier in var.gpu_tiers : tier.engine != "vertex" || tier.machine_type == null || try(
        length(regexall(local.vertex_gpu_machines[tier.gpu_type].pattern, tier.machine_type)) > 0,
        !contains(keys(local.vertex_gpu_machines), tier.gpu_type)
      )
    ])
    error_message = "gpu_tiers: a vertex tier's machine_type must be one that carries its gpu_type: ${join("; ", [for type, machines in local.vertex_gpu_machines : "${type} on ${machines.shown}"])}."
  }
  validation {
    condition = alltrue([
      for tier in var.gpu_tiers : tier.engine != "vertex" || (
        tier.gpu_count >= 1 && tier.gpu_count <= 16 && floor(tier.gpu_count) == tier.gpu_count
        && try(
          tier.gpu_count == (
            can(regex("-[0-9]+g$", tier.machine_type))
            ? tonumber(regex("-([0-9]+)g$", tier.machine_type)[0])
            : local.g2_machine_gpu_count[tier.machine_type]
          ),
          true
        )
      )
    ])
    error_message = "gpu_tiers: a vertex tier's gpu_count must be a whole number from 1 to 16 and the number of GPUs its machine_type has (a3-highgpu-8g: 8; g2-standard-24: 2, g2-standard-48: 4, g2-standard-96: 8, other g2-standard machines: 1)."
  }
  validation {
    condition     = alltrue([for tier in var.gpu_tiers : tier.engine != "vertex" || (tier.cpu == null && tier.memory == null)])
    error_message = "gpu_tiers: cpu and memory are a cloudrun tier's; a vertex tier's machine_type decides both."
  }
  validation {
    condition     = alltrue([for tier in var.gpu_tiers : tier.region == null || can(regex("^[a-z]+-[a-z]+[0-9]$", tier.region))])
    error_message = "gpu_tiers: region must be a GCP region name such as us-central1 (unset: var.region)."
  }
  # Vertex's Scheduling.timeout: "The maximum job running time. The default is 7 days."
  # (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/CustomJobSpec#Scheduling)
  validation {
    condition     = alltrue([for tier in var.gpu_tiers : tier.engine != "vertex" || tier.task_timeout_seconds == null || try(tier.task_timeout_seconds >= 600 && tier.task_timeout_seconds <= 604800 && floor(tier.task_timeout_seconds) == tier.task_timeout_seconds, false)])
    error_message = "gpu_tiers: a vertex tier's task_timeout_seconds must be a whole number of seconds from 600 to 604800 (7 days: Vertex AI's default for a custom job's longest run, and the most tuning/tiers.py accepts); unset, its jobs get trainer_task_timeout_seconds."
  }
}

variable "trainer_gpu_zonal_redundancy" {
  description = "Reserve GPU capacity for zonal failover. Off by default: it needs the (scarcer) zonal-redundancy GPU quota and costs more; a failed zone only delays a retried task."
  type        = bool
  default     = false
}

# Cloud Run's task-timeout page: "For tasks using GPUs, the maximum available timeout is 1
# hour", and 12 hours under the preview "Long running GPU jobs" (a BETA launch stage). It also
# warns that GPU tasks are not live-migrated: maintenance terminates them, so a multi-hour task
# "should be expected to be interrupted at least once". The trainer checkpoints and hands the
# job to a new execution before its deadline, so a long job spans several tasks either way.
# https://cloud.google.com/run/docs/configuring/task-timeout
locals {
  gpu_task_timeout_max_seconds = {
    GA   = 3600
    BETA = 43200
  }
}

variable "trainer_task_timeout_seconds" {
  description = "Wall-clock limit of one trainer task attempt (Cloud Run's task timeout). A GPU task may run at most 3600 s (1 hour) at launch stage GA, 43200 s (12 hours) with trainer_launch_stage = BETA (preview). The trainer checkpoints before the deadline and the job continues in a new execution (up to trainer_max_executions of them)."
  type        = number
  default     = 3600
  validation {
    condition = (
      var.trainer_task_timeout_seconds >= 600
      && floor(var.trainer_task_timeout_seconds) == var.trainer_task_timeout_seconds
      && var.trainer_task_timeout_seconds <= lookup(local.gpu_task_timeout_max_seconds, var.trainer_launch_stage, 3600)
    )
    error_message = "trainer_task_timeout_seconds must be a whole number of seconds from 600 up to ${lookup(local.gpu_task_timeout_max_seconds, var.trainer_launch_stage, 3600)}: Cloud Run allows a GPU task at most 3600 s (1 hour) at launch stage GA and 43200 s (12 hours) at BETA (preview \"Long running GPU jobs\"); trainer_launch_stage is ${var.trainer_launch_stage}."
  }
}

variable "trainer_max_executions" {
  description = "How many trainer executions one job may run in (TRAINER_MAX_EXECUTIONS): each trains for at most trainer_task_timeout_seconds, so this bounds a job's total time on a GPU (24 one-hour executions by default). A job that would need more fails as a user error naming the bound."
  type        = number
  default     = 24
  validation {
    condition     = var.trainer_max_executions >= 1 && var.trainer_max_executions <= 50 && floor(var.trainer_max_executions) == var.trainer_max_executions
    error_message = "trainer_max_executions must be a whole number between 1 and 50 (tuning/settings.py accepts the same)."
  }
}

variable "trainer_max_retries" {
  description = "Retries of a failed trainer task (a retry resumes from the latest checkpoint; user errors are not retried by the trainer's exit code)."
  type        = number
  default     = 2
  validation {
    condition     = var.trainer_max_retries >= 0 && var.trainer_max_retries <= 10
    error_message = "trainer_max_retries must be between 0 and 10."
  }
}

variable "trainer_launch_stage" {
  description = "Launch stage of the trainer job: GA, or BETA for what Cloud Run offers only in preview (GPU task timeouts above 1 hour, the nvidia-rtx-pro-6000 GPU, regions where GPU jobs are still in preview)."
  type        = string
  default     = "GA"
  validation {
    condition     = contains(["GA", "BETA"], var.trainer_launch_stage)
    error_message = "trainer_launch_stage must be GA or BETA."
  }
}

variable "gpu_pricing" {
  description = "The operator's figures for estimates (tuning/pricing.py, GPU_PRICING), per GPU type (a Cloud Run GPU or a Vertex AI accelerator type): usd_per_gpu_hour, all-in (the machine, or Cloud Run's CPU and memory, divided by its GPUs, plus one GPU; e.g. a negotiated or committed-use price), and tokens_per_second, training tokens a second of one GPU for every model and method. Each replaces the built-in table's figure for that GPU type; measured throughput of this deployment's completed jobs replaces both after a few jobs. Example: { \"nvidia-l4\" = { usd_per_gpu_hour = 1.42, tokens_per_second = 4000 } }."
  type = map(object({
    usd_per_gpu_hour  = optional(number)
    tokens_per_second = optional(number)
  }))
  default  = {}
  nullable = false
  validation {
    condition     = alltrue([for gpu_type in keys(var.gpu_pricing) : contains(concat(keys(local.cloud_run_gpu_types), keys(local.vertex_gpu_memory_gib)), gpu_type)])
    error_message = "gpu_pricing: each key must be a GPU type tiers can use: ${join(", ", concat(keys(local.cloud_run_gpu_types), keys(local.vertex_gpu_memory_gib)))}."
  }
  validation {
    condition     = alltrue([for figures in values(var.gpu_pricing) : figures.usd_per_gpu_hour != null || figures.tokens_per_second != null])
    error_message = "gpu_pricing: each GPU type sets usd_per_gpu_hour, tokens_per_second or both."
  }
  validation {
    condition     = alltrue([for figures in values(var.gpu_pricing) : try(figures.usd_per_gpu_hour > 0 && figures.usd_per_gpu_hour <= 1000, figures.usd_per_gpu_hour == null)])
    error_message = "gpu_pricing: usd_per_gpu_hour must be above 0 and at most 1000 (tuning/pricing.py accepts the same)."
  }
  validation {
    condition     = alltrue([for figures in values(var.gpu_pricing) : try(figures.tokens_per_second > 0 && figures.tokens_per_second <= 1e9, figures.tokens_per_second == null)])
    error_message = "gpu_pricing: tokens_per_second must be above 0 and at most 1e9."
  }
}
