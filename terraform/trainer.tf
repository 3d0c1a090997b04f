# The trainer: Cloud Run jobs with one NVIDIA GPU (one job per GPU tier), started once per training job by
# dispatch (the execution's only override is JOB_ID), and the Artifact Registry
# repositories its image and the functions' images live in.

locals {
  trainer_repository = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.trainer.repository_id}"
  trainer_image      = coalesce(var.trainer_image, "${local.trainer_repository}/trainer:latest")

  # TrainerSettings (tuning/settings.py). No secret here: the trainer reads the job's secret
  # references from its record and their values from Secret Manager at run time.
  trainer_environment = {
    PROJECT_ID              = var.project_id
    REGION                  = var.region
    GCS_CONFIG_BUCKET_NAME  = google_storage_bucket.config.name
    GCS_DATA_BUCKET_NAME    = google_storage_bucket.data.name
    GCS_MODELS_BUCKET_NAME  = google_storage_bucket.models.name
    TRAINING_REQUESTS_TOPIC = google_pubsub_topic.topics["requests"].name
    JOB_EVENTS_TOPIC        = google_pubsub_topic.topics["events"].name
    JOB_NOTIFICATIONS_TOPIC = google_pubsub_topic.topics["notifications"].name
    JOBS_COLLECTION         = var.jobs_collection
    SECRET_BACKEND          = "secretmanager"
    SECRET_PREFIX           = var.secret_prefix
    # The trainer re-checks a job's gs:// base model against these before reading it.
    ALLOWED_BASE_MODEL_LOCATIONS = join(",", var.allowed_base_model_locations)
    # Must equal the job's max_retries: on the last attempt the trainer reports a system
    # failure itself instead of exiting for a retry that will never come.
    TRAINER_MAX_RETRIES = tostring(var.trainer_max_retries)
    # The task's deadline, for an execution started without dispatch's override of it.
    TRAINER_TASK_TIMEOUT_SECONDS = tostring(var.trainer_task_timeout_seconds)
    LOG_FORMAT                   = "json"
    # Where the models volume below shows the bucket's base_models/ folder: base weights are
    # read from there in place, never copied into the task's memory (trainer/base_model.py).
    MODELS_MOUNT_PATH     = local.models_mount_path
    MODELS_MOUNT_ONLY_DIR = local.models_mount_only_dir
  }

  # The models bucket as a read-only Cloud Storage volume (Cloud Storage FUSE), limited to its
  # base_models/ folder (gcsfuse's only-dir): uploaded base models and the trainer's Hub
  # copies (base_models/hub/, which the trainer writes through the API, never the volume).
  # Jobs' outputs and checkpoints stay out of sight of the volume, which reads with the
  # trainer account's own credentials rather than the job's downscoped ones. Reads need
  # storage.objects.get and .list on the bucket: the trainer's objectUser grant (iam.tf).
  # https://cloud.google.com/run/docs/configuring/jobs/cloud-storage-volume-mounts
  models_mount_path     = "/mnt/models"
  models_mount_only_dir = "base_models" # tuning/tenancy.py BASE_MODELS
}

resource "google_artifact_registry_repository" "trainer" {
  repository_id = "${var.prefix}-trainer"
  location      = var.region
  format        = "DOCKER"
  description   = "Trainer images (terraform/cloudbuild.trainer.yaml pushes them)"
  labels        = local.labels

  # Untagged images are superseded builds; keep the recent ones for rollbacks.
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }
  cleanup_policies {
    id     = "delete-old-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "2592000s" # 30 days
    }
  }

  depends_on = [google_project_service.enabled]
}

# Cloud Build writes the functions' images here (build_config.docker_repository).
resource "google_artifact_registry_repository" "functions" {
  repository_id = "${var.prefix}-functions"
  location      = var.region
  format        = "DOCKER"
  description   = "Images Cloud Build makes from the function source zips"
  labels        = local.labels

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "2592000s" # 30 days
    }
  }

  depends_on = [google_project_service.enabled]
}

# One Cloud Run trainer job per Cloud Run GPU tier: the GPU type, CPU and memory are part of a
# job's template, so each tier has its own. "default" is the job of var.trainer_gpu, which every
# deployment has (earlier versions' only trainer job: the moved block keeps it in place).
locals {
  trainer_jobs = merge(
    { default = { name = "${var.prefix}-trainer", gpu = var.trainer_gpu } },
    {
      for tier in var.gpu_tiers : tier.name => {
        name = "${var.prefix}-trainer-${tier.name}"
        gpu = {
          type   = tier.gpu_type
          cpu    = coalesce(tier.cpu, local.cloud_run_tier_defaults.cpu)
          memory = coalesce(tier.memory, local.cloud_run_tier_defaults.memory)
        }
      } if tier.engine == "cloudrun"
    },
  )

  # Vertex AI tiers have no job of their own: dispatch creates a custom job per execution
  # (tuning/launchers/vertex.py) from the trainer image, as the trainer account. Declaring one
  # enables the Vertex AI API (apis.tf), its grants (iam.tf) and the functions' TRAINER_IMAGE
  # and TRAINER_SERVICE_ACCOUNT (functions.tf); without one none of these exists.
  vertex_tiers = [for tier in var.gpu_tiers : tier if tier.engine == "vertex"]
  uses_vertex  = length(local.vertex_tiers) > 0
}

# GPU_TIERS for the functions (tuning/settings.py, parsed by tuning/tiers.py parse_tiers): empty
# when no tier is declared (the functions then make the default tier from TRAINER_JOB_NAME and
# TRAINER_GPU_TYPE), else every tier. Each tier is encoded on its own, because a Cloud Run
# tier's object and a Vertex tier's have different fields (one list of both would not have
# one type); joined, they are the JSON list jsonencode would write. A tier open to every caller
# (allowed_callers ["*"], the default) leaves allowed_callers out, as tuning/tiers.py defaults it,
# so that GPU_TIERS stays what it was before tiers had callers.
locals {
  gpu_tier_entries = concat(
    [jsonencode({
      name                = "default"
      engine              = "cloudrun"
      gpu_type            = var.trainer_gpu.type
      gpu_memory_gib      = local.cloud_run_gpu_memory_gib[var.trainer_gpu.type]
      max_concurrent_jobs = var.max_concurrent_jobs
      cloud_run_job       = local.trainer_jobs["default"].name
    })],
    [
      for tier in var.gpu_tiers : tier.engine == "vertex" ? jsonencode(merge(
        {
          name                = tier.name
          engine              = tier.engine
          gpu_type            = tier.gpu_type
          gpu_count           = tier.gpu_count
          gpu_memory_gib      = local.vertex_gpu_memory_gib[tier.gpu_type]
          max_concurrent_jobs = tier.max_concurrent_jobs
          machine_type        = tier.machine_type
        },
        tier.region == null ? {} : { region = tier.region },
        tier.task_timeout_seconds == null ? {} : { task_timeout_seconds = tier.task_timeout_seconds },
        tier.allowed_callers == tolist(["*"]) ? {} : { allowed_callers = tier.allowed_callers },
        )) : jsonencode(merge(
        {
          name                = tier.name
          engine              = tier.engine
          gpu_type            = tier.gpu_type
          gpu_memory_gib      = local.cloud_run_gpu_memory_gib[tier.gpu_type]
          max_concurrent_jobs = tier.max_concurrent_jobs
          cloud_run_job       = local.trainer_jobs[tier.name].name
        },
        tier.task_timeout_seconds == null ? {} : { task_timeout_seconds = tier.task_timeout_seconds },
        tier.allowed_callers == tolist(["*"]) ? {} : { allowed_callers = tier.allowed_callers },
      ))
    ],
  )
  gpu_tiers_setting = length(var.gpu_tiers) == 0 ? "" : "[${join(",", local.gpu_tier_entries)}]"
}

moved {
  from = google_cloud_run_v2_job.trainer
  to   = google_cloud_run_v2_job.trainer["default"]
}

resource "google_cloud_run_v2_job" "trainer" {
  for_each            = local.trainer_jobs
  name                = each.value.name
  location            = var.region
  launch_stage        = var.trainer_launch_stage
  deletion_protection = var.deletion_protection
  labels              = local.labels

  template {
    labels = local.labels
    # One task per execution: one execution is one training job.
    task_count  = 1
    parallelism = 1

    template {
      service_account = google_service_account.accounts["trainer"].email
      timeout         = "${var.trainer_task_timeout_seconds}s"
      max_retries     = var.trainer_max_retries

      # GPU jobs run without zonal redundancy unless asked: cheaper, and the quota most
      # projects are granted.
      gpu_zonal_redundancy_disabled = !var.trainer_gpu_zonal_redundancy

      # Network file systems (the models volume) need the second generation environment,
      # the only one Cloud Run jobs run in; stated so that it cannot silently change.
      # https://cloud.google.com/run/docs/about-execution-environments
      execution_environment = "EXECUTION_ENVIRONMENT_GEN2"

      volumes {
        name = "models"
        gcs {
          bucket        = google_storage_bucket.models.name
          read_only     = true
          mount_options = ["only-dir=${local.models_mount_only_dir}"]
        }
      }

      node_selector {
        accelerator = each.value.gpu.type
      }

      containers {
        image = local.trainer_image

        resources {
          limits = {
            cpu              = each.value.gpu.cpu
            memory           = each.value.gpu.memory
            "nvidia.com/gpu" = "1"
          }
        }

        dynamic "env" {
          for_each = local.trainer_environment
          content {
            name  = env.key
            value = env.value
          }
        }

        volume_mounts {
          name       = "models"
          mount_path = local.models_mount_path
        }
      }
    }
  }

  # The image's tag stays the same across pushes (:latest by default): deploy a new trainer
  # build by pinning trainer_image to its digest, not by re-applying the same tag.
  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.grants,
    google_storage_bucket_iam_member.grants,
    google_pubsub_topic_iam_member.grants,
  ]
}
