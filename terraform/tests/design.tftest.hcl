# Design assertions, run by `terraform test` (make tf-check) against a mocked google provider:
# nothing is created; the provider's real schema comes from the offline stand-in
# (tools/tfcheck). `function_source_dir` is pointed at placeholder zips by tfcheck.
# Terraform's && and || evaluate both sides: an index that a fault may break goes in try().

mock_provider "google" {
  mock_data "google_project" {
    defaults = {
      number = "123456789012"
    }
  }
}

variables {
  project_id          = "tfcheck-project"
  prefix              = "tuning"
  labels              = { team = "ml-platform" }
  api_invoker_members = ["group:ml-team@example.com"]
}

run "design" {
  command = apply

  # --- The trainer is a GPU job, sized for it, with its own account and no secrets ------

  assert {
    condition     = try(google_cloud_run_v2_job.trainer["default"].template[0].template[0].node_selector[0].accelerator, null) == "nvidia-l4"
    error_message = "The trainer job must run on an nvidia-l4 GPU by default."
  }
  assert {
    condition = (
      try(google_cloud_run_v2_job.trainer["default"].template[0].template[0].containers[0].resources[0].limits["nvidia.com/gpu"], null) == "1"
      && google_cloud_run_v2_job.trainer["default"].template[0].template[0].containers[0].resources[0].limits["cpu"] == "8"
      && google_cloud_run_v2_job.trainer["default"].template[0].template[0].containers[0].resources[0].limits["memory"] == "32Gi"
    )
    error_message = "The trainer container must ask for one GPU with 8 CPU and 32Gi."
  }
  assert {
    condition = (
      google_cloud_run_v2_job.trainer["default"].template[0].template[0].timeout == "3600s"
      && google_cloud_run_v2_job.trainer["default"].template[0].template[0].max_retries == 2
      && google_cloud_run_v2_job.trainer["default"].template[0].task_count == 1
    )
    error_message = "Task timeout and retries must come from the variables; one task per execution."
  }
  assert {
    condition = anytrue([
      for env in google_cloud_run_v2_job.trainer["default"].template[0].template[0].containers[0].env :
      env.name == "TRAINER_MAX_RETRIES" && env.value == tostring(google_cloud_run_v2_job.trainer["default"].template[0].template[0].max_retries)
    ])
    error_message = "The trainer must know the job's max_retries (TRAINER_MAX_RETRIES) to tell its last attempt."
  }
  assert {
    condition     = google_cloud_run_v2_job.trainer["default"].template[0].template[0].service_account == google_service_account.accounts["trainer"].email
    error_message = "The trainer must run as its own service account."
  }
  assert {
    condition = alltrue([
      for env in google_cloud_run_v2_job.trainer["default"].template[0].template[0].containers[0].env :
      !can(regex("(?i)token|password|api_key|hf_|wandb", env.name)) && length(env.value_source) == 0
    ])
    error_message = "No secret may be handed to the trainer in an environment variable."
  }
  assert {
    condition     = startswith(google_cloud_run_v2_job.trainer["default"].template[0].template[0].containers[0].image, "us-central1-docker.pkg.dev/tfcheck-project/tuning-trainer/")
    error_message = "By default the trainer image comes from the deployment's Artifact Registry repository."
  }

  # --- Every consumed subscription is pushed with OIDC and dead-lettered -----------------

  assert {
    condition = alltrue([
      for key, subscription in google_pubsub_subscription.push :
      try(subscription.dead_letter_policy[0].dead_letter_topic, null) == google_pubsub_topic.dead_letter[key].id
    ])
    error_message = "Every push subscription must dead-letter to its own dead-letter topic."
  }
  assert {
    condition = alltrue([
      for key, subscription in google_pubsub_subscription.push :
      subscription.ack_deadline_seconds > local.functions[local.push_subscriptions[key].function].timeout_seconds
      && subscription.ack_deadline_seconds <= 600
      && length(subscription.retry_policy) == 1
    ])
    error_message = "Push subscriptions need a retry policy and an ack deadline above their function's timeout and within Pub/Sub's 600 s."
  }
  assert {
    condition = alltrue([
      for subscription in google_pubsub_subscription.push :
      try(subscription.push_config[0].oidc_token[0].service_account_email, null) == google_service_account.accounts["push-invoker"].email
    ])
    error_message = "Push requests must carry an OIDC token of the dedicated push invoker account."
  }
  assert {
    condition = (
      keys(google_pubsub_subscription.push) == keys(google_pubsub_topic.dead_letter)
      && keys(google_pubsub_topic_iam_member.dead_letter_publisher) == keys(google_pubsub_topic.dead_letter)
      && keys(google_pubsub_subscription_iam_member.dead_letter_subscriber) == keys(google_pubsub_subscription.push)
      && keys(google_pubsub_subscription.dead_letter_store) == keys(google_pubsub_topic.dead_letter)
    )
    error_message = "Each dead-letter topic needs a store subscription, and the Pub/Sub service agent publisher on it and subscriber on its source."
  }
  assert {
    condition     = sort(keys(local.push_subscriptions)) == tolist(["events", "requests"])
    error_message = "training-requests and job-events are the consumed topics (job-notifications is for others to subscribe to)."
  }

  # --- Identities: one per function, private functions, least privilege ------------------

  assert {
    condition = alltrue([
      for name, function in google_cloudfunctions2_function.functions :
      function.service_config[0].service_account_email == google_service_account.accounts[replace(name, "_", "-")].email
    ])
    error_message = "Each function must run as its own service account."
  }
  assert {
    condition = length(distinct(concat(
      [for function in google_cloudfunctions2_function.functions : function.service_config[0].service_account_email],
      [google_cloud_run_v2_job.trainer["default"].template[0].template[0].service_account],
    ))) == length(google_cloudfunctions2_function.functions) + 1
    error_message = "No two deployables may share a service account."
  }
  assert {
    condition = alltrue([
      for member in concat(
        [for grant in google_project_iam_member.grants : grant.member],
        [for grant in google_storage_bucket_iam_member.grants : grant.member],
        [for grant in google_pubsub_topic_iam_member.grants : grant.member],
        [for grant in google_cloud_run_v2_job_iam_member.grants : grant.member],
        [for grant in google_service_account_iam_member.grants : grant.member],
        [for grant in google_cloud_run_v2_service_iam_member.invokers : grant.member],
      ) : !contains(["allUsers", "allAuthenticatedUsers"], member)
    ])
    error_message = "Nothing may be granted to allUsers or allAuthenticatedUsers."
  }
  assert {
    condition = alltrue([
      for role in concat(
        [for grant in google_project_iam_member.grants : grant.role],
        [for grant in google_storage_bucket_iam_member.grants : grant.role],
        [for grant in google_pubsub_topic_iam_member.grants : grant.role],
        [for grant in google_cloud_run_v2_job_iam_member.grants : grant.role],
        [for grant in google_service_account_iam_member.grants : grant.role],
        [for grant in google_cloud_run_v2_service_iam_member.invokers : grant.role],
        [for grant in google_artifact_registry_repository_iam_member.builder : grant.role],
      ) : !contains(["roles/owner", "roles/editor", "roles/viewer"], role) && !can(regex("(\\.admin|Admin)$", role))
    ])
    error_message = "No primitive or admin role may be granted (owner, editor, storage.admin, run.admin, secretmanager.admin...)."
  }
  assert {
    condition = alltrue([
      for grant in concat(
        local.project_grants, local.bucket_grants, local.topic_grants, local.trainer_job_grants,
        local.service_account_grants, local.function_invoker_grants,
      ) : length(grant.why) >= 20
    ])
    error_message = "Every grant needs a `why` saying what the account does with it."
  }
  assert {
    condition = alltrue([
      for grant in google_project_iam_member.grants :
      strcontains(try(grant.condition[0].expression, ""), "projects/123456789012/secrets/tuning-")
      if startswith(grant.role, "roles/secretmanager.") || strcontains(grant.role, "secretDeleter")
    ])
    error_message = "Secret roles that touch existing secrets must be conditioned on the job secrets' name prefix."
  }
  assert {
    condition = (
      google_project_iam_custom_role.roles["secretCreator"].permissions == tolist(["secretmanager.secrets.create"])
      && google_project_iam_custom_role.roles["secretLister"].permissions == tolist(["secretmanager.secrets.list"])
    )
    error_message = "The only unconditioned secret roles create or list, and hold nothing else."
  }
  assert {
    condition = (
      google_project_iam_custom_role.roles["urlSigner"].permissions == tolist(["iam.serviceAccounts.signBlob"])
      && google_service_account_iam_member.grants["status status custom:urlSigner"].role == google_project_iam_custom_role.roles["urlSigner"].id
      && google_service_account_iam_member.grants["status status custom:urlSigner"].service_account_id == google_service_account.accounts["status"].name
      && !contains([for grant in local.service_account_grants : grant.role if grant.account == "status"], "roles/iam.serviceAccountTokenCreator")
    )
    error_message = "The status function signs URLs with a custom role holding only iam.serviceAccounts.signBlob, granted on its own account (not Token Creator)."
  }
  assert {
    condition = alltrue([
      for name in ["dispatch", "on_job_event", "reconcile"] :
      google_cloudfunctions2_function.functions[name].service_config[0].ingress_settings == "ALLOW_INTERNAL_ONLY"
    ])
    error_message = "The event handlers must only accept internal traffic (Pub/Sub push and Cloud Scheduler)."
  }
  assert {
    condition = (
      sort([for grant in google_cloud_run_v2_service_iam_member.invokers : grant.member if grant.name == google_cloudfunctions2_function.functions["dispatch"].name])
      == tolist(["serviceAccount:${google_service_account.accounts["push-invoker"].email}"])
      && sort([for grant in google_cloud_run_v2_service_iam_member.invokers : grant.member if grant.name == google_cloudfunctions2_function.functions["reconcile"].name])
      == tolist(["serviceAccount:${google_service_account.accounts["scheduler"].email}"])
      && sort([for grant in google_cloud_run_v2_service_iam_member.invokers : grant.member if grant.name == google_cloudfunctions2_function.functions["submit"].name])
      == tolist(["group:ml-team@example.com"])
    )
    error_message = "Only the push invoker may call dispatch, only the scheduler reconcile, only API callers the API."
  }

  assert {
    # tuning/reconciliation.py cancels a stalled execution (Cloud Run executions.cancel needs
    # run.executions.cancel, https://cloud.google.com/run/docs/reference/iam/permissions).
    condition = alltrue([
      for account in ["dispatch", "delete", "reconcile"] : anytrue([
        for grant in google_cloud_run_v2_job_iam_member.grants :
        grant.member == "serviceAccount:${google_service_account.accounts[account].email}"
        && contains(flatten([
          for role in google_project_iam_custom_role.roles : role.permissions if role.id == grant.role
        ]), "run.executions.cancel")
      ])
    ])
    error_message = "dispatch, delete and reconcile cancel trainer executions: each needs run.executions.cancel on the trainer job."
  }

  # --- Functions: built by the builder account, which can read what it builds ------------

  assert {
    condition = alltrue([
      for function in google_cloudfunctions2_function.functions :
      function.build_config[0].service_account == google_service_account.accounts["builder"].id
    ])
    error_message = "Every function must be built as the builder account (build_config.service_account)."
  }
  assert {
    # Cloud Functions gen2 builds from its own copy in gcf-v2-sources-<project number>-<region>
    # (hashicorp/terraform-provider-google#20571: "Access to bucket gcf-v2-sources-... denied").
    condition = anytrue([
      for grant in google_project_iam_member.grants :
      grant.member == "serviceAccount:${google_service_account.accounts["builder"].email}"
      && grant.role == "roles/storage.objectViewer"
      && try(grant.condition[0].expression, "") == "resource.name == \"projects/_/buckets/gcf-v2-sources-123456789012-us-central1\" || resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-123456789012-us-central1/objects/\")"
    ])
    error_message = "The function builder must be able to read the function sources: Storage Object Viewer conditioned on the gcf-v2-sources-<project number>-<region> bucket only."
  }

  # --- Functions: environment from settings.py, content-hashed sources --------------------

  assert {
    condition = alltrue([
      for function in google_cloudfunctions2_function.functions : alltrue([
        for name in [
          "PROJECT_ID", "REGION", "GCS_CONFIG_BUCKET_NAME", "GCS_DATA_BUCKET_NAME", "GCS_MODELS_BUCKET_NAME",
          "TRAINING_REQUESTS_TOPIC", "JOB_EVENTS_TOPIC", "JOB_NOTIFICATIONS_TOPIC", "JOBS_COLLECTION",
          "SECRET_BACKEND", "SECRET_PREFIX", "OWNER_SCOPING", "SIGNED_URL_TTL_SECONDS", "LAUNCHER",
          "TRAINER_JOB_NAME", "MAX_CONCURRENT_JOBS", "RECONCILE_STALE_SECONDS", "LOG_FORMAT",
          "TRAINER_MAX_EXECUTIONS",
        ] : contains(keys(function.service_config[0].environment_variables), name)
      ])
    ])
    error_message = "Every function needs the full environment tuning/settings.py reads."
  }
  assert {
    condition = alltrue([
      for name in ["dispatch", "reconcile"] :
      "${google_cloudfunctions2_function.functions[name].service_config[0].environment_variables["TRAINER_TASK_TIMEOUT_SECONDS"]}s"
      == google_cloud_run_v2_job.trainer["default"].template[0].template[0].timeout
    ])
    error_message = "Dispatch and reconcile start executions with the trainer job's own task timeout (TRAINER_TASK_TIMEOUT_SECONDS)."
  }
  assert {
    condition = alltrue([
      for name, source in google_storage_bucket_object.function_sources :
      can(regex("^functions/${name}-[0-9a-f]{16}\\.zip$", source.name))
    ])
    error_message = "Function sources must be uploaded under content-hashed names, so new code redeploys."
  }
  assert {
    condition     = alltrue([for function in google_cloudfunctions2_function.functions : function.build_config[0].runtime == "python311"])
    error_message = "The functions run on Python 3.11."
  }

  # --- Storage, Firestore, scheduling, labels ------------------------------------------------

  assert {
    condition = alltrue([
      for bucket in [google_storage_bucket.data, google_storage_bucket.config, google_storage_bucket.models, google_storage_bucket.sources] :
      bucket.uniform_bucket_level_access && bucket.public_access_prevention == "enforced"
    ])
    error_message = "Every bucket needs uniform access and enforced public access prevention."
  }
  assert {
    condition     = google_storage_bucket.config.versioning[0].enabled
    error_message = "The config bucket must be versioned."
  }
  assert {
    condition = anytrue([
      for rule in google_storage_bucket.models.lifecycle_rule :
      rule.action[0].type == "Delete" && rule.condition[0].matches_prefix == tolist(["checkpoints/"]) && rule.condition[0].age == 7
    ])
    error_message = "Checkpoints must be deleted after checkpoint_retention_days."
  }
  assert {
    condition = (
      length(google_firestore_index.jobs) == 4
      && alltrue([
        for index in google_firestore_index.jobs :
        slice([for field in index.fields : "${field.field_path}:${field.order}"], length(index.fields) - 2, length(index.fields)) == ["created_at:DESCENDING", "job_id:DESCENDING"]
      ])
      && [for field in google_firestore_index.jobs["by-owner-status"].fields : field.field_path] == ["owner", "status", "created_at", "job_id"]
      && [for field in google_firestore_index.jobs["all"].fields : field.field_path] == ["created_at", "job_id"]
      && [for field in google_firestore_index.events.fields : field.field_path] == ["timestamp", "event_id"]
    )
    error_message = "The composite indexes must match the job store's queries."
  }
  assert {
    condition = (
      google_cloud_scheduler_job.reconcile.schedule == "*/5 * * * *"
      && google_cloud_scheduler_job.reconcile.http_target[0].oidc_token[0].service_account_email == google_service_account.accounts["scheduler"].email
    )
    error_message = "reconcile must be called every 5 minutes with the scheduler account's OIDC token."
  }
  assert {
    condition = alltrue([
      for labels in concat(
        [for bucket in [google_storage_bucket.data, google_storage_bucket.config, google_storage_bucket.models, google_storage_bucket.sources] : bucket.labels],
        [for topic in google_pubsub_topic.topics : topic.labels],
        [for topic in google_pubsub_topic.dead_letter : topic.labels],
        [for subscription in google_pubsub_subscription.push : subscription.labels],
        [for function in google_cloudfunctions2_function.functions : function.labels],
        [google_cloud_run_v2_job.trainer["default"].labels, google_artifact_registry_repository.trainer.labels, google_artifact_registry_repository.functions.labels],
      ) : labels["system"] == "gemma-tuning" && labels["deployment"] == "tuning" && labels["team"] == "ml-platform"
    ])
    error_message = "Every resource that takes labels must carry the deployment's labels."
  }
}

run "another_gpu_follows_the_variable" {
  command = plan
  variables {
    trainer_gpu          = { type = "nvidia-rtx-pro-6000", cpu = "20", memory = "80Gi" }
    trainer_launch_stage = "BETA"
  }
  assert {
    condition     = google_cloud_run_v2_job.trainer["default"].template[0].template[0].node_selector[0].accelerator == "nvidia-rtx-pro-6000"
    error_message = "trainer_gpu.type must select the accelerator."
  }
}

run "no_gpu_tiers_keeps_the_one_trainer_job" {
  command = plan
  assert {
    condition     = keys(google_cloud_run_v2_job.trainer) == ["default"] && local.gpu_tiers_setting == ""
    error_message = "Without gpu_tiers there is the one trainer job and GPU_TIERS is empty (the functions make the default tier)."
  }
}

run "each_cloud_run_tier_gets_its_job_grants_and_setting" {
  command = plan
  variables {
    trainer_launch_stage = "BETA"
    gpu_tiers = [
      { name = "big", gpu_type = "nvidia-rtx-pro-6000", cpu = "20", memory = "80Gi", max_concurrent_jobs = 2 },
    ]
  }
  assert {
    condition = (
      google_cloud_run_v2_job.trainer["big"].name == "tuning-trainer-big"
      && google_cloud_run_v2_job.trainer["big"].template[0].template[0].node_selector[0].accelerator == "nvidia-rtx-pro-6000"
      && google_cloud_run_v2_job.trainer["big"].template[0].template[0].containers[0].resources[0].limits["memory"] == "80Gi"
      && google_cloud_run_v2_job.trainer["default"].template[0].template[0].node_selector[0].accelerator == "nvidia-l4"
    )
    error_message = "A cloudrun tier must get its own trainer job with its GPU, beside the default one."
  }
  assert {
    condition = length([
      for grant in google_cloud_run_v2_job_iam_member.grants : grant if grant.name == "tuning-trainer-big"
    ]) == length(local.trainer_job_grants)
    error_message = "Dispatch, delete and reconcile need the same grants on every tier's job."
  }
  assert {
    condition = (
      [for tier in jsondecode(local.gpu_tiers_setting) : tier.name] == ["default", "big"]
      && jsondecode(local.gpu_tiers_setting)[1].cloud_run_job == "tuning-trainer-big"
      && jsondecode(local.gpu_tiers_setting)[1].gpu_memory_gib == 95.5
      && jsondecode(local.gpu_tiers_setting)[1].max_concurrent_jobs == 2
    )
    error_message = "GPU_TIERS must list the default tier and each declared one with its job and GPU memory."
  }
}

run "a_tier_below_cloud_run_s_minimum_is_refused" {
  command = plan
  variables {
    gpu_tiers = [{ name = "small", gpu_type = "nvidia-l4", cpu = "2", memory = "8Gi" }]
  }
  expect_failures = [var.gpu_tiers]
}

run "a_tier_named_default_is_refused" {
  command = plan
  variables {
    gpu_tiers = [{ name = "default", gpu_type = "nvidia-l4" }]
  }
  expect_failures = [var.gpu_tiers]
}

run "artifact_retention_adds_a_rule" {
  command = plan
  variables {
    artifact_retention_days = 90
  }
  assert {
    condition     = length(google_storage_bucket.models.lifecycle_rule) == 2
    error_message = "artifact_retention_days must add a lifecycle rule for exported artifacts."
  }
}

run "refuses_public_api_callers" {
  command = plan
  variables {
    api_invoker_members = ["allUsers"]
  }
  expect_failures = [var.api_invoker_members]
}

run "refuses_public_publishers" {
  command = plan
  variables {
    request_publisher_members = ["allAuthenticatedUsers"]
  }
  expect_failures = [var.request_publisher_members]
}

run "refuses_a_prefix_too_long_for_service_account_ids" {
  command = plan
  variables {
    prefix = "a-prefix-far-too-long"
  }
  expect_failures = [var.prefix]
}

run "refuses_a_gpu_without_enough_memory" {
  command = plan
  variables {
    trainer_gpu = { memory = "8Gi" }
  }
  expect_failures = [var.trainer_gpu]
}

# --- Cloud Run's GPU task timeout follows the launch stage ---------------------------------
# https://cloud.google.com/run/docs/configuring/task-timeout: 1 hour for GPU tasks at GA,
# 12 hours in the preview "Long running GPU jobs".

run "refuses_a_gpu_task_over_one_hour_at_ga" {
  command = plan
  variables {
    trainer_task_timeout_seconds = 3601
  }
  expect_failures = [var.trainer_task_timeout_seconds]
}

run "allows_twelve_hours_in_preview" {
  command = plan
  variables {
    trainer_launch_stage         = "BETA"
    trainer_task_timeout_seconds = 43200
  }
  assert {
    condition     = google_cloud_run_v2_job.trainer["default"].template[0].template[0].timeout == "43200s" && google_cloud_run_v2_job.trainer["default"].launch_stage == "BETA"
    error_message = "At launch stage BETA a GPU task may run 12 hours."
  }
}

run "refuses_a_gpu_task_over_twelve_hours_in_preview" {
  command = plan
  variables {
    trainer_launch_stage         = "BETA"
    trainer_task_timeout_seconds = 43201
  }
  expect_failures = [var.trainer_task_timeout_seconds]
}

# --- CPU and memory per GPU type, and the launch stage a type needs ------------------------
# https://cloud.google.com/run/docs/configuring/jobs/gpu: L4 at least 4 CPU and 16 GiB; RTX PRO
# 6000 Blackwell (preview) at least 20 CPU and 80 GiB.

run "refuses_an_l4_with_too_few_cpus" {
  command = plan
  variables {
    trainer_gpu = { type = "nvidia-l4", cpu = "2", memory = "16Gi" }
  }
  expect_failures = [var.trainer_gpu]
}

run "refuses_an_rtx_pro_6000_sized_for_an_l4" {
  command = plan
  variables {
    trainer_gpu          = { type = "nvidia-rtx-pro-6000", cpu = "8", memory = "32Gi" }
    trainer_launch_stage = "BETA"
  }
  expect_failures = [var.trainer_gpu]
}

run "refuses_an_rtx_pro_6000_with_too_little_memory" {
  command = plan
  variables {
    trainer_gpu          = { type = "nvidia-rtx-pro-6000", cpu = "20", memory = "64Gi" }
    trainer_launch_stage = "BETA"
  }
  expect_failures = [var.trainer_gpu]
}

run "refuses_a_preview_gpu_at_ga" {
  command = plan
  variables {
    trainer_gpu = { type = "nvidia-rtx-pro-6000", cpu = "20", memory = "80Gi" }
  }
  expect_failures = [var.trainer_gpu]
}

run "refuses_a_gpu_cloud_run_does_not_offer" {
  command = plan
  variables {
    trainer_gpu = { type = "nvidia-h100", cpu = "8", memory = "32Gi" }
  }
  expect_failures = [var.trainer_gpu]
}
