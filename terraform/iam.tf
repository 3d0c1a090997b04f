# Every grant of the system, each with the reason it is needed (`why`).
#
# Rules: no primitive or admin role (owner, editor, *.admin) for a runtime account; a role is
# granted on the bucket, topic, subscription, job, service or account it is about, and on
# the project only where the resource has no IAM of its own (Firestore) or the permission is
# checked on the project (creating and listing secrets). Secret grants on the project carry
# a condition that limits them to the job secrets' name prefix. `make tf-check` asserts these
# rules (terraform/tests/design.tftest.hcl, tools/tfcheck/policies).
#
# `account` is a key of local.service_accounts, "pubsub-service-agent", or an IAM member
# given in a variable. Roles written "custom:<key>" are the custom roles below.

locals {
  members = merge(
    { for key, account in google_service_account.accounts : key => "serviceAccount:${account.email}" },
    { pubsub-service-agent = local.pubsub_service_agent },
  )

  # Narrow permission sets where no predefined role is narrow enough. Every permission is
  # one Google lists and custom roles support (https://cloud.google.com/iam/docs/custom-roles-permissions-support);
  # tests/terraform/test_custom_roles.py holds each one's source and fails on any other name.
  custom_roles = {
    # https://cloud.google.com/secret-manager/docs/access-control
    secretCreator = {
      title       = "Job secret creator"
      description = "Create secrets (not read them, not add to existing ones)."
      permissions = ["secretmanager.secrets.create"]
    }
    secretLister = {
      title       = "Job secret lister"
      description = "List secret names and labels (never their values)."
      permissions = ["secretmanager.secrets.list"]
    }
    secretDeleter = {
      title       = "Job secret deleter"
      description = "Delete secrets; granted only with the job-secret name condition."
      permissions = ["secretmanager.secrets.delete"]
    }
    # https://cloud.google.com/storage/docs/access-control/iam-permissions
    objectCleaner = {
      title       = "Job object cleaner"
      description = "List, read and delete objects (never create them)."
      permissions = ["storage.objects.delete", "storage.objects.get", "storage.objects.list"]
    }
    # Signing a URL as oneself needs only this permission on one's own account: the IAM
    # Credentials API's signBlob "requires the following IAM permission on the specified
    # resource name: iam.serviceAccounts.signBlob"
    # (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/signBlob,
    # https://cloud.google.com/storage/docs/authentication/creating-signatures). Token Creator
    # would also let the account mint access and ID tokens as itself.
    urlSigner = {
      title       = "Download URL signer"
      description = "Sign blobs as the account it is granted on (V4 signed URLs); no tokens."
      permissions = ["iam.serviceAccounts.signBlob"]
    }
    # https://cloud.google.com/run/docs/reference/iam/permissions ("run.executions.cancel:
    # Cancel job executions"; before 2024-09-16 run.jobs.run cancelled them)
    executionCanceller = {
      title       = "Trainer execution canceller"
      description = "Read and cancel executions of a Cloud Run job (no run, update or delete)."
      permissions = ["run.executions.cancel", "run.executions.get", "run.executions.list", "run.jobs.get"]
    }
    # https://cloud.google.com/vertex-ai/docs/general/access-control (aiplatform.customJobs.*).
    # Created only with a vertex tier (vertex_only). Split as the Cloud Run grants are: only
    # dispatch creates (Cloud Run: runs) custom jobs; dispatch, delete and reconcile read and
    # cancel them. A custom job that names no service account runs as Vertex AI's own custom
    # code agent, so create is kept from the accounts that only need to stop jobs.
    customJobCreator = {
      title       = "Vertex AI custom job creator"
      description = "Create Vertex AI custom jobs; running one as an account also takes actAs on it."
      permissions = ["aiplatform.customJobs.create"]
      vertex_only = true
    }
    customJobCanceller = {
      title       = "Vertex AI custom job canceller"
      description = "Read and cancel Vertex AI custom jobs (no create, no delete)."
      permissions = ["aiplatform.customJobs.cancel", "aiplatform.customJobs.get"]
      vertex_only = true
    }
  }

  # Firestore has no IAM below the project; Secret Manager checks create and list on the
  # project. job_secrets_only adds the name-prefix condition, function_sources_only the
  # condition on Cloud Functions' source bucket (main.tf).
  #
  # The builder is the custom build service account of the functions: Cloud Run functions'
  # build-account guide asks for Logs Writer, Artifact Registry Writer and read access to the
  # function source (https://cloud.google.com/run/docs/configuring/services/build-service-account;
  # it names Storage Object Admin, whose writes this build does not need: images go to
  # Artifact Registry, build_config.docker_repository).
  project_grants = concat(
    [
      { account = "submit", role = "roles/datastore.user", why = "creates job records and reads them back for idempotent retries" },
      { account = "submit", role = "custom:secretCreator", why = "creates the secret of a token sent with a request; creation is checked on the project, where a name condition cannot apply, and the role holds nothing else" },
      { account = "submit", role = "roles/secretmanager.secretVersionAdder", job_secrets_only = true, why = "stores the token as a version of its job's own secret, and of no other" },
      { account = "submit", role = "custom:secretLister", why = "finds the secrets of a submission it rolls back because the request could not be queued" },
      { account = "submit", role = "custom:secretDeleter", job_secrets_only = true, why = "deletes the secrets of a submission it rolls back" },
      { account = "status", role = "roles/datastore.viewer", why = "reads job records and their event histories" },
      { account = "delete", role = "roles/datastore.user", why = "marks jobs cancelled and deletes their records and histories" },
      { account = "delete", role = "custom:secretLister", why = "finds a job's secrets by label; listing is checked on the project and shows names and labels, never values" },
      { account = "delete", role = "custom:secretDeleter", job_secrets_only = true, why = "deletes the secrets of the job being deleted" },
      { account = "dispatch", role = "roles/datastore.user", why = "claims a queued job in a transaction and records its execution" },
      { account = "dispatch", role = "custom:secretCreator", why = "stores the tokens of full requests published by other services (see submit)" },
      { account = "dispatch", role = "roles/secretmanager.secretVersionAdder", job_secrets_only = true, why = "stores those tokens in their job's own secret" },
      { account = "on-job-event", role = "roles/datastore.user", why = "applies lifecycle events to job records" },
      { account = "reconcile", role = "roles/datastore.user", why = "finds jobs in flight and records the failure of an execution that ended silently" },
      { account = "trainer", role = "roles/datastore.viewer", why = "checks that its job still exists and was not cancelled" },
      { account = "trainer", role = "roles/secretmanager.secretAccessor", job_secrets_only = true, why = "reads its job's Hugging Face and W&B tokens; a user's own secret needs its own grant (docs/deploy.md)" },
      { account = "builder", role = "roles/logging.logWriter", why = "Cloud Build writes the function build logs" },
      { account = "builder", role = "roles/storage.objectViewer", function_sources_only = true, why = "the build fetches each function's source from the gcf-v2-sources bucket Cloud Functions copies it to (main.tf), and from no other bucket" },
    ],
    # Vertex AI custom jobs have no IAM policy of their own: these are on the project, and
    # only where a gpu_tiers entry has engine "vertex". Dispatch's actAs on the trainer
    # account, which a custom job running as it needs (CustomJobSpec.serviceAccount: "Users
    # submitting jobs must have act-as permission on this run-as account"), is the one Cloud
    # Run executions already need (service_account_grants).
    local.uses_vertex ? [
      { account = "dispatch", role = "custom:customJobCreator", why = "creates one Vertex AI custom job per execution of a job on a vertex tier, running as the trainer account" },
      { account = "dispatch", role = "custom:customJobCanceller", why = "reads the custom job it started and cancels it when its job was deleted or cancelled meanwhile" },
      { account = "delete", role = "custom:customJobCanceller", why = "cancels the running custom job of a cancelled or deleted job on a vertex tier" },
      { account = "reconcile", role = "custom:customJobCanceller", why = "reads whether a job's custom job is still running and how it ended, and cancels one that hangs (reconcile_stalled_seconds)" },
    ] : [],
  )

  bucket_grants = [
    { account = "submit", bucket = "config", role = "roles/storage.objectUser", why = "writes the job's redacted config; a retried submission overwrites it, which takes delete as well as create" },
    { account = "dispatch", bucket = "config", role = "roles/storage.objectUser", why = "writes the config of full requests published by other services (overwritten on redelivery)" },
    { account = "delete", bucket = "config", role = "custom:objectCleaner", why = "deletes the job's config" },
    { account = "delete", bucket = "models", role = "custom:objectCleaner", why = "deletes every artifact and checkpoint under the job's prefixes" },
    { account = "status", bucket = "models", role = "roles/storage.objectViewer", why = "lists a job's artifacts; a signed URL only works if its signer may read the object" },
    { account = "trainer", bucket = "config", role = "roles/storage.objectViewer", why = "reads its job's config" },
    { account = "trainer", bucket = "data", role = "roles/storage.objectViewer", why = "reads the processed datasets (and base-model snapshots kept there)" },
    { account = "trainer", bucket = "models", role = "roles/storage.objectUser", why = "writes checkpoints and artifacts, overwriting and pruning checkpoints when a retried attempt resumes; reads base models through the models volume (get, list) and stages Hub models under base_models/hub/" },
    { account = "builder", bucket = "sources", role = "roles/storage.objectViewer", why = "Cloud Build reads the function source zips" },
  ]

  topic_grants = concat(
    [
      { account = "submit", topic = "requests", role = "roles/pubsub.publisher", why = "queues an accepted job for dispatch" },
      { account = "dispatch", topic = "events", role = "roles/pubsub.publisher", why = "reports a job that could not be started" },
      { account = "dispatch", topic = "notifications", role = "roles/pubsub.publisher", why = "announces a published request it rejected (recorded as a failed job)" },
      { account = "delete", topic = "notifications", role = "roles/pubsub.publisher", why = "announces cancelled jobs, and jobs paused before they trained" },
      { account = "delete", topic = "requests", role = "roles/pubsub.publisher", why = "queues a resumed job for dispatch again" },
      { account = "on-job-event", topic = "notifications", role = "roles/pubsub.publisher", why = "re-publishes terminal transitions (completed, failed, cancelled)" },
      { account = "on-job-event", topic = "requests", role = "roles/pubsub.publisher", why = "asks dispatch to continue a job that handed off from its execution before the task deadline" },
      { account = "reconcile", topic = "requests", role = "roles/pubsub.publisher", why = "re-queues queued jobs whose request was lost" },
      { account = "reconcile", topic = "events", role = "roles/pubsub.publisher", why = "reports executions that ended without a final event" },
      { account = "trainer", topic = "events", role = "roles/pubsub.publisher", why = "publishes lifecycle events: progress, metrics, completion, failure" },
    ],
    [for member in var.request_publisher_members : { account = member, topic = "requests", role = "roles/pubsub.publisher", why = "other services submit jobs by publishing requests (request_publisher_members)" }],
    [for member in var.notification_subscriber_members : { account = member, topic = "notifications", role = "roles/pubsub.subscriber", why = "lets listed consumers attach subscriptions to job notifications (notification_subscriber_members)" }],
  )

  trainer_job_grants = [
    { account = "dispatch", role = "roles/run.jobsExecutorWithOverrides", why = "starts one execution per job with the JOB_ID override" },
    { account = "dispatch", role = "custom:executionCanceller", why = "cancels an execution it started for a job deleted or cancelled meanwhile" },
    { account = "delete", role = "custom:executionCanceller", why = "cancels the running execution of a cancelled or deleted job" },
    { account = "reconcile", role = "custom:executionCanceller", why = "reads whether a job's execution is still running and how it ended, and cancels one that hangs (reconcile_stalled_seconds)" },
  ]

  service_account_grants = [
    { account = "dispatch", target = "trainer", role = "roles/iam.serviceAccountUser", why = "executions it starts run as the trainer account (actAs); it cannot create or change jobs" },
    { account = "status", target = "status", role = "custom:urlSigner", why = "signs download URLs through IAM signBlob as itself, with no key file; holds signBlob only, not Token Creator" },
    { account = "pubsub-service-agent", target = "push-invoker", role = "roles/iam.serviceAccountTokenCreator", why = "Pub/Sub mints the push requests' OIDC tokens as the invoker (required in projects created before April 2021)" },
  ]

  # Gen2 functions are Cloud Run services: roles/run.invoker on the service is what lets a
  # caller in. Nobody else (never allUsers) is granted it.
  function_invoker_grants = concat(
    [
      { account = "push-invoker", function = "dispatch", why = "the training-requests push subscription delivers to dispatch" },
      { account = "push-invoker", function = "on_job_event", why = "the job-events push subscription delivers to on_job_event" },
      { account = "scheduler", function = "reconcile", why = "Cloud Scheduler calls reconcile every few minutes" },
    ],
    flatten([
      for member in var.api_invoker_members : [
        for function in ["submit", "status", "delete"] :
        { account = member, function = function, why = "API caller listed in api_invoker_members" }
      ]
    ]),
  )
}

resource "google_project_iam_custom_role" "roles" {
  for_each    = { for key, role in local.custom_roles : key => role if !try(role.vertex_only, false) || local.uses_vertex }
  role_id     = "${replace(var.prefix, "-", "_")}_${each.key}"
  title       = "${var.prefix}: ${each.value.title}"
  description = each.value.description
  permissions = each.value.permissions
  depends_on  = [google_project_service.enabled]
}

resource "google_project_iam_member" "grants" {
  for_each = { for grant in local.project_grants : "${grant.account} ${grant.role}" => grant }
  project  = var.project_id
  member   = lookup(local.members, each.value.account, each.value.account)
  role     = startswith(each.value.role, "custom:") ? google_project_iam_custom_role.roles[trimprefix(each.value.role, "custom:")].id : each.value.role

  dynamic "condition" {
    for_each = (
      try(each.value.job_secrets_only, false) ? [local.job_secret_condition] :
      try(each.value.function_sources_only, false) ? [local.function_sources_condition] : []
    )
    content {
      title       = condition.value.title
      description = condition.value.description
      expression  = condition.value.expression
    }
  }
}

resource "google_storage_bucket_iam_member" "grants" {
  for_each = { for grant in local.bucket_grants : "${grant.account} ${grant.bucket} ${grant.role}" => grant }
  bucket = {
    data    = google_storage_bucket.data.name
    config  = google_storage_bucket.config.name
    models  = google_storage_bucket.models.name
    sources = google_storage_bucket.sources.name
  }[each.value.bucket]
  member = lookup(local.members, each.value.account, each.value.account)
  role   = startswith(each.value.role, "custom:") ? google_project_iam_custom_role.roles[trimprefix(each.value.role, "custom:")].id : each.value.role
}

resource "google_pubsub_topic_iam_member" "grants" {
  for_each = { for grant in local.topic_grants : "${grant.account} ${grant.topic} ${grant.role}" => grant }
  topic    = google_pubsub_topic.topics[each.value.topic].id
  member   = lookup(local.members, each.value.account, each.value.account)
  role     = each.value.role
}

# Dead-lettering: Pub/Sub itself republishes a message that exhausted its delivery attempts
# to the dead-letter topic, then acknowledges it on the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = google_pubsub_topic.dead_letter
  topic    = each.value.id
  member   = local.pubsub_service_agent
  role     = "roles/pubsub.publisher" # why: forwards undeliverable messages to the dead-letter topic
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each     = google_pubsub_subscription.push
  subscription = each.value.id
  member       = local.pubsub_service_agent
  role         = "roles/pubsub.subscriber" # why: acknowledges a message on its source subscription once dead-lettered
}

resource "google_cloud_run_v2_job_iam_member" "grants" {
  # Every grant on every tier's trainer job.
  for_each = {
    for pair in setproduct(keys(local.trainer_jobs), local.trainer_job_grants) :
    "${pair[0] == "default" ? "" : "${pair[0]} "}${pair[1].account} ${pair[1].role}" => merge(pair[1], { job = pair[0] })
  }
  name     = google_cloud_run_v2_job.trainer[each.value.job].name
  location = var.region
  member   = lookup(local.members, each.value.account, each.value.account)
  role     = startswith(each.value.role, "custom:") ? google_project_iam_custom_role.roles[trimprefix(each.value.role, "custom:")].id : each.value.role
}

resource "google_service_account_iam_member" "grants" {
  for_each           = { for grant in local.service_account_grants : "${grant.account} ${grant.target} ${grant.role}" => grant }
  service_account_id = google_service_account.accounts[each.value.target].name
  member             = lookup(local.members, each.value.account, each.value.account)
  role               = startswith(each.value.role, "custom:") ? google_project_iam_custom_role.roles[trimprefix(each.value.role, "custom:")].id : each.value.role
}

resource "google_cloud_run_v2_service_iam_member" "invokers" {
  for_each = { for grant in local.function_invoker_grants : "${grant.account} ${grant.function}" => grant }
  # A gen2 function's Cloud Run service has the function's name.
  name     = google_cloudfunctions2_function.functions[each.value.function].name
  location = var.region
  member   = lookup(local.members, each.value.account, each.value.account)
  role     = "roles/run.invoker"
}

# Cloud Build, as the builder account, pushes the images it builds: the functions' (from
# their zips) and the trainer's (terraform/cloudbuild.trainer.yaml, docs/deploy.md).
resource "google_artifact_registry_repository_iam_member" "builder" {
  for_each = {
    functions = google_artifact_registry_repository.functions.name
    trainer   = google_artifact_registry_repository.trainer.name
  }
  repository = each.value
  location   = var.region
  member     = local.members["builder"]
  role       = "roles/artifactregistry.writer" # why: pushes the images it builds, to these repositories only
}
