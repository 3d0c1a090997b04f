# Cloud Scheduler calls reconcile every few minutes, authenticated with an OIDC token of the
# scheduler account (the only account allowed to invoke reconcile, iam.tf).

resource "google_cloud_scheduler_job" "reconcile" {
  name             = "${var.prefix}-reconcile"
  region           = var.region
  description      = "Settles jobs whose trainer execution ended without a final event"
  schedule         = "*/${var.reconcile_every_minutes} * * * *"
  time_zone        = "Etc/UTC"
  attempt_deadline = "${local.functions.reconcile.timeout_seconds + 20}s"

  # A missed run is made up by the next one: no long retry chains.
  retry_config {
    retry_count          = 1
    min_backoff_duration = "30s"
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.functions["reconcile"].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.accounts["scheduler"].email
      audience              = google_cloudfunctions2_function.functions["reconcile"].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.invokers]
}
