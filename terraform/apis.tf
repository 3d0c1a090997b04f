# The APIs the system uses. Left enabled on destroy: other workloads in the project may use
# them too, and disabling an API deletes its resources.

locals {
  services = setunion(
    [
      "artifactregistry.googleapis.com",     # trainer and function images
      "cloudbuild.googleapis.com",           # builds the function images from the source zips
      "cloudfunctions.googleapis.com",       # the six functions
      "cloudresourcemanager.googleapis.com", # project lookups and project IAM
      "cloudscheduler.googleapis.com",       # the reconcile schedule
      "firestore.googleapis.com",            # job records
      "iam.googleapis.com",                  # service accounts and custom roles
      "iamcredentials.googleapis.com",       # signBlob for signed download URLs
      "logging.googleapis.com",              # function and trainer logs
      "pubsub.googleapis.com",               # requests, lifecycle events, notifications
      "run.googleapis.com",                  # the trainer job and the functions' services
      "secretmanager.googleapis.com",        # per-job secrets
      "storage.googleapis.com",              # data, config, models and source buckets
    ],
    # Vertex AI custom jobs, only where a gpu_tiers entry has engine "vertex" (trainer.tf).
    local.uses_vertex ? ["aiplatform.googleapis.com"] : [],
  )
}

resource "google_project_service" "enabled" {
  for_each           = local.services
  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}
