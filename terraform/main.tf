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
}
