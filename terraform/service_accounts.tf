# One identity per deployable, so that each one's grants (iam.tf) are exactly what it uses,
# plus the identities the platform acts as on the system's behalf.

locals {
  service_accounts = {
    submit       = "Function submit: queues fine-tuning jobs"
    status       = "Function status: serves job state and signed download URLs"
    delete       = "Function delete: cancels and deletes jobs"
    dispatch     = "Function dispatch: starts trainer executions"
    on-job-event = "Function on_job_event: applies lifecycle events to jobs"
    reconcile    = "Function reconcile: settles jobs whose execution ended silently"
    trainer      = "Cloud Run job trainer: fine-tunes one job per execution"
    push-invoker = "Pub/Sub push subscriptions: the OIDC identity that invokes dispatch and on_job_event"
    scheduler    = "Cloud Scheduler: the OIDC identity that invokes reconcile"
    builder      = "Cloud Build: builds the function images from their source zips"
  }
}

resource "google_service_account" "accounts" {
  for_each     = local.service_accounts
  account_id   = "${var.prefix}-${each.key}"
  display_name = "${var.prefix} ${each.key}"
  description  = each.value
  depends_on   = [google_project_service.enabled]
}
