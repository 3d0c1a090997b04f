# The six Cloud Functions (gen2). Each is built by Cloud Build from its own zip
# (functions/<name>/main.py, the tuning package and a pinned requirements.txt, made by
# `make package`), runs as its own service account (iam.tf), and is private: only the
# principals granted roles/run.invoker in iam.tf can call it.

locals {
  # The one place entry points live: the decorated handler in functions/<name>/main.py.
  # kind: api (HTTP, called by users), push (a Pub/Sub push subscription), scheduled (Cloud Scheduler).
  functions = {
    submit = {
      entry_point = "submit_training_job"
      kind        = "api"
      description = "POST /train: validates and queues a fine-tuning job; POST /train:estimate"
      # POST /train:estimate reads the whole dataset and counts its tokens (tuning/preflight.py):
      # the split file's bytes plus one int per row, and the base model's tokenizer.
      timeout_seconds = 300
      memory          = "2Gi"
    }
    status = {
      entry_point     = "serve_job_status"
      kind            = "api"
      description     = "GET /jobs, /jobs/{id}, /jobs/{id}/events, /jobs/download/{id}"
      timeout_seconds = 60
      memory          = "512Mi"
    }
    delete = {
      entry_point     = "delete_or_cancel_job"
      kind            = "api"
      description     = "DELETE /jobs/{id} and POST /jobs/{id}/cancel"
      timeout_seconds = 300 # deletes every object under the job's prefixes
      memory          = "512Mi"
    }
    dispatch = {
      entry_point = "dispatch_training_request"
      kind        = "push"
      description = "training-requests -> validates a job, then starts a trainer execution when a GPU slot is free"
      # The validation before any GPU (tuning/validating.py) reads the dataset and counts its
      # tokens within one delivery: 540 s makes the push ack deadline (timeout + 60 s) Pub/Sub's
      # largest, 600 s (https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.subscriptions,
      # ackDeadlineSeconds). 2Gi holds a split file of about a million chat rows as bytes.
      timeout_seconds = 540
      memory          = "2Gi"
    }
    on_job_event = {
      entry_point     = "record_job_event"
      kind            = "push"
      description     = "job-events -> applies lifecycle events to the job record"
      timeout_seconds = 60
      memory          = "512Mi"
    }
    reconcile = {
      entry_point     = "reconcile_jobs"
      kind            = "scheduled"
      description     = "Cloud Scheduler -> settles jobs whose execution ended without a final event"
      timeout_seconds = 300
      memory          = "512Mi"
    }
  }

  # tuning/settings.py reads these (ApiSettings and LauncherSettings); every function gets
  # the same set so that moving a route between functions needs no infrastructure change.
  function_environment = {
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
    OWNER_SCOPING           = tostring(var.owner_scoping)
    SIGNED_URL_TTL_SECONDS  = tostring(var.signed_url_ttl_seconds)
    LAUNCHER                = "cloudrun"
    TRAINER_JOB_NAME        = google_cloud_run_v2_job.trainer["default"].name
    MAX_CONCURRENT_JOBS     = tostring(var.max_concurrent_jobs)
    # The default tier (tuning/tiers.py legacy_tier) when var.gpu_tiers declares none;
    # otherwise GPU_TIERS lists it with the declared ones.
    TRAINER_GPU_TYPE        = var.trainer_gpu.type
    GPU_TIERS               = local.gpu_tiers_setting
    RECONCILE_STALE_SECONDS = tostring(var.reconcile_stale_seconds)
    LOG_FORMAT              = "json"
    # 0: no per-caller share; otherwise one caller's jobs hold at most this many slots.
    MAX_CONCURRENT_JOBS_PER_OWNER = tostring(var.max_concurrent_jobs_per_owner)
    # 0: never; otherwise a running execution silent this long is cancelled as hung.
    RECONCILE_STALLED_SECONDS = tostring(var.reconcile_stalled_seconds)
    # gs:// base models submit and dispatch accept besides <models bucket>/base_models/.
    ALLOWED_BASE_MODEL_LOCATIONS = join(",", var.allowed_base_model_locations)
    # Dispatch and reconcile start executions with the job's task timeout and tell the
    # trainer its deadline; it must equal the trainer job's own timeout (trainer.tf).
    TRAINER_TASK_TIMEOUT_SECONDS = tostring(var.trainer_task_timeout_seconds)
    # How many executions one job may span before dispatch refuses another.
    TRAINER_MAX_EXECUTIONS = tostring(var.trainer_max_executions)
    # The operator's GPU prices and throughputs for estimates (tuning/pricing.py).
    GPU_PRICING = jsonencode(var.gpu_pricing)
  }

  # What a Vertex AI tier's custom jobs run, and as whom (tuning/launchers/factory.py): the
  # Cloud Run trainer job's image and account. Only a deployment with a vertex tier sets them.
  vertex_function_environment = {
    TRAINER_IMAGE           = local.trainer_image
    TRAINER_SERVICE_ACCOUNT = google_service_account.accounts["trainer"].email
  }

  function_source_dir = startswith(var.function_source_dir, "/") ? var.function_source_dir : "${path.module}/${var.function_source_dir}"
  function_zips       = { for name in keys(local.functions) : name => "${local.function_source_dir}/${name}.zip" }
  # The object name carries the zip's hash: new code is a new object, and so a new build.
  function_zip_hashes = {
    for name, zip in local.function_zips : name => fileexists(zip) ? filesha256(zip) : "missing"
  }
}

resource "google_storage_bucket_object" "function_sources" {
  for_each = local.functions
  name     = "functions/${each.key}-${substr(local.function_zip_hashes[each.key], 0, 16)}.zip"
  bucket   = google_storage_bucket.sources.name
  source   = local.function_zips[each.key]

  lifecycle {
    precondition {
      condition     = fileexists(local.function_zips[each.key])
      error_message = "No ${local.function_zips[each.key]}: run `make package` first (or point function_source_dir at the zips)."
    }
  }
}

resource "google_cloudfunctions2_function" "functions" {
  # checkov:skip=CKV_GCP_124:The API functions are called by users outside the VPC; IAM (run.invoker) guards them and api_ingress narrows ingress when a load balancer fronts them. Event handlers are internal-only.
  for_each    = local.functions
  name        = "${var.prefix}-${replace(each.key, "_", "-")}"
  location    = var.region
  description = each.value.description
  labels      = local.labels

  build_config {
    runtime           = "python311"
    entry_point       = each.value.entry_point
    service_account   = google_service_account.accounts["builder"].id
    docker_repository = google_artifact_registry_repository.functions.id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.function_sources[each.key].name
      }
    }
  }

  service_config {
    service_account_email          = google_service_account.accounts[replace(each.key, "_", "-")].email
    available_memory               = each.value.memory
    timeout_seconds                = each.value.timeout_seconds
    min_instance_count             = 0
    max_instance_count             = var.function_max_instances
    all_traffic_on_latest_revision = true
    # Pub/Sub push and Cloud Scheduler requests from this project count as internal, so the
    # event handlers need no public ingress; the API's ingress is a deliberate choice.
    ingress_settings      = each.value.kind == "api" ? var.api_ingress : "ALLOW_INTERNAL_ONLY"
    environment_variables = merge(local.function_environment, local.uses_vertex ? local.vertex_function_environment : {})
  }

  # The build needs its account's grants, and a function must not start before its own.
  depends_on = [
    google_project_iam_member.grants,
    google_storage_bucket_iam_member.grants,
    google_artifact_registry_repository_iam_member.builder,
  ]
}
