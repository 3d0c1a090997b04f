output "function_urls" {
  description = "HTTPS endpoint of each function (callers need roles/run.invoker: api_invoker_members). The API routes: submit (POST /train), status (GET /jobs...), delete (DELETE /jobs/{id}, POST /jobs/{id}/cancel)."
  value       = { for name, function in google_cloudfunctions2_function.functions : name => function.service_config[0].uri }
}

output "api_urls" {
  description = "Base URLs of the HTTP API, by route group; the ones to give to API callers."
  value = {
    submit = google_cloudfunctions2_function.functions["submit"].service_config[0].uri
    status = google_cloudfunctions2_function.functions["status"].service_config[0].uri
    delete = google_cloudfunctions2_function.functions["delete"].service_config[0].uri
  }
}

output "topics" {
  description = "Pub/Sub topic names: training-requests (publish a TrainRequest here to submit from another service), job-events (lifecycle events), job-notifications (terminal transitions, for anyone to subscribe to), and the dead-letter topics."
  value = merge(
    { for key, topic in google_pubsub_topic.topics : key => topic.name },
    { for key, topic in google_pubsub_topic.dead_letter : "${key}_dead_letter" => topic.name },
  )
}

output "dead_letter_subscriptions" {
  description = "Pull subscriptions holding dead-lettered messages, to inspect or replay them."
  value       = { for key, subscription in google_pubsub_subscription.dead_letter_store : key => subscription.name }
}

output "buckets" {
  description = "Bucket names: data (upload datasets under processed_datasets/<dataset_id>/), config (redacted job configs), models (artifacts and checkpoints), sources (function zips)."
  value = {
    data    = google_storage_bucket.data.name
    config  = google_storage_bucket.config.name
    models  = google_storage_bucket.models.name
    sources = google_storage_bucket.sources.name
  }
}

output "trainer_job_name" {
  description = "Name of the default tier's trainer Cloud Run job (TRAINER_JOB_NAME)."
  value       = google_cloud_run_v2_job.trainer["default"].name
}

output "trainer_job_names" {
  description = "The Cloud Run trainer job of each Cloud Run GPU tier, by tier name."
  value       = { for tier, job in google_cloud_run_v2_job.trainer : tier => job.name }
}

output "trainer_image_repository" {
  description = "Artifact Registry path the trainer image is pushed to (terraform/cloudbuild.trainer.yaml's _REPOSITORY)."
  value       = local.trainer_repository
}

output "service_accounts" {
  description = "Email of each service account. To share an existing secret with callers, grant submit and dispatch secretmanager.viewer and the trainer secretAccessor on it, and annotate it (docs/deploy.md)."
  value       = { for key, account in google_service_account.accounts : key => account.email }
}
