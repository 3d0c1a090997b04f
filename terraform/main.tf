# The project, the names every other file derives from, and the labels every resource carries.

provider "google" {
  project = var.project_id
  region  = var.region
}

# The project number: IAM conditions on secret names and the Pub/Sub service agent's email
# are written with it.
data "google_project" "this" {
  project_id = var.project_id
}

locals {
  labels = merge(var.labels, {
    system     = "gemma-tuning"
    deployment = var.prefix
  })

  project_number = data.google_project.this.number

  # Pub/Sub's own identity: it forwards undeliverable messages to the dead-letter topics
  # and mints the OIDC tokens of push requests.
  pubsub_service_agent = "serviceAccount:service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # Secrets of jobs are named `<secret_prefix><job_id>-<name>` (tuning/gcp/secrets.py); IAM
  # conditions see them as projects/<number>/secrets/<id>, with the project *number*.
  job_secret_name_prefix = "projects/${local.project_number}/secrets/${var.secret_prefix}"
  job_secret_condition = {
    title       = "job-secrets-only"
    description = "Only secrets whose id starts with ${var.secret_prefix} (the per-job secrets)"
    expression  = "resource.name.startsWith(\"${local.job_secret_name_prefix}\")"
  }

  # Cloud Functions gen2 copies each function's zip into its own bucket,
  # gcf-v2-sources-<project number>-<region> (https://cloud.google.com/functions/docs/building),
  # and the build fetches it from there as the build service account; without read access
  # the build fails with "Access to bucket gcf-v2-sources-... denied. You must grant Storage
  # Object Viewer permission to <build account>" (hashicorp/terraform-provider-google#20571).
  # The bucket appears only with the first function, so the grant is on the project with a
  # condition on the bucket's name; IAM conditions see buckets as projects/_/buckets/<name>
  # and objects as projects/_/buckets/<name>/objects/<object>
  # (https://cloud.google.com/iam/docs/conditions-resource-attributes).
  function_sources_bucket = "gcf-v2-sources-${local.project_number}-${var.region}"
  function_sources_condition = {
    title       = "function-sources-only"
    description = "Only ${local.function_sources_bucket}, where Cloud Functions keeps the sources it builds"
    expression  = "resource.name == \"projects/_/buckets/${local.function_sources_bucket}\" || resource.name.startsWith(\"projects/_/buckets/${local.function_sources_bucket}/objects/\")"
  }
}
