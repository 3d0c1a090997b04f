# The job store: Firestore in native mode, the project's (default) database (the clients in
# tuning/gcp/firestore.py open the default database), and the composite indexes its queries need.

resource "google_firestore_database" "default" {
  count                             = var.create_firestore_database ? 1 : 0
  name                              = "(default)"
  location_id                       = coalesce(var.firestore_location, var.region)
  type                              = "FIRESTORE_NATIVE"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  # With protection on, `terraform destroy` leaves the job records in place.
  deletion_policy = var.deletion_protection ? "ABANDON" : "DELETE"
  depends_on      = [google_project_service.enabled]
}

locals {
  # JobStore.list (tuning/gcp/firestore.py): optional equality filters on owner and status,
  # newest first with job_id as the tie-breaker of the page cursor. Two order-by fields need a
  # composite index even with no filter (an operator listing every job).
  job_list_indexes = {
    all             = []
    by-status       = ["status"]
    by-owner        = ["owner"]
    by-owner-status = ["owner", "status"]
  }
}

resource "google_firestore_index" "jobs" {
  for_each    = local.job_list_indexes
  database    = "(default)"
  collection  = var.jobs_collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
  fields {
    field_path = "job_id"
    order      = "DESCENDING"
  }

  depends_on = [google_firestore_database.default]
}

# JobStore.list_events: a job's history in time order, event_id breaking ties. Two order-by
# fields need a composite index even without a filter.
resource "google_firestore_index" "events" {
  database    = "(default)"
  collection  = "events"
  query_scope = "COLLECTION"

  fields {
    field_path = "timestamp"
    order      = "ASCENDING"
  }
  fields {
    field_path = "event_id"
    order      = "ASCENDING"
  }

  depends_on = [google_firestore_database.default]
}
