# Pinned with `~>` so a minor upgrade is a deliberate change. The google provider's 8.7
# schema is what `make tf-check` validates against (tools/tfcheck, extracted offline).
terraform {
  required_version = "~> 1.11"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 8.7"
    }
  }
}
