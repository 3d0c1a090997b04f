# Buckets (layout in tuning/layout.py): input datasets, redacted job configs, trained models,
# and the function source zips. All private: uniform bucket-level access, public access
# prevention enforced, access granted per bucket in iam.tf. Secrets never go to any of them.

locals {
  bucket_location = upper(coalesce(var.bucket_location, var.region))
  bucket_names = {
    data    = "${var.prefix}-${var.project_id}-data"
    config  = "${var.prefix}-${var.project_id}-config"
    models  = "${var.prefix}-${var.project_id}-models"
    sources = "${var.prefix}-${var.project_id}-sources"
  }
}

# gs://<data>/processed_datasets/{dataset_id}/...: written by the data pipeline, read by the trainer.
resource "google_storage_bucket" "data" {
  # checkov:skip=CKV_GCP_78:Datasets are written once by the data pipeline under new ids; versions would only double storage.
  name                        = local.bucket_names.data
  location                    = local.bucket_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection
  labels                      = local.labels
  depends_on                  = [google_project_service.enabled]
}

# gs://<config>/configs/{job_id}.json: the redacted request of each job. Versioned, so an
# overwritten or deleted config can be recovered for a while.
resource "google_storage_bucket" "config" {
  name                        = local.bucket_names.config
  location                    = local.bucket_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection
  labels                      = local.labels

  versioning {
    enabled = true
  }

  # Old versions are only a safety net: drop them after the retention period.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.config_noncurrent_retention_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

# gs://<models>/{trained_adapters,merged_models,gguf_models,checkpoints,evaluations}/{job_id}/...
resource "google_storage_bucket" "models" {
  # checkov:skip=CKV_GCP_78:Checkpoints are rewritten every few hundred steps; versioning would keep every multi-GB version and defeat the lifecycle rules.
  name                        = local.bucket_names.models
  location                    = local.bucket_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection
  labels                      = local.labels

  # Checkpoints only serve a retried attempt of a running job.
  lifecycle_rule {
    condition {
      age            = var.checkpoint_retention_days
      matches_prefix = ["checkpoints/"]
    }
    action {
      type = "Delete"
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.artifact_retention_days == null ? [] : [var.artifact_retention_days]
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = ["trained_adapters/", "merged_models/", "gguf_models/", "evaluations/"]
      }
      action {
        type = "Delete"
      }
    }
  }

  depends_on = [google_project_service.enabled]
}

# Function source zips, named by content hash (functions.tf); terraform deletes the zip a
# deployment replaces.
resource "google_storage_bucket" "sources" {
  # checkov:skip=CKV_GCP_78:Holds content-addressed build inputs that `make package` recreates; nothing to recover.
  name                        = local.bucket_names.sources
  location                    = local.bucket_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true # holds only rebuildable artifacts
  labels                      = local.labels
  depends_on                  = [google_project_service.enabled]
}
