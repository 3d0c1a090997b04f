# Topics (ARCHITECTURE.md "Topics"), the push subscriptions that deliver them to the
# functions, and a dead-letter topic for every consumed subscription.
#
# Delivery is explicit rather than through Eventarc triggers so that retries and
# dead-lettering are visible here: each push subscription has an OIDC identity (the push
# invoker account, the only one allowed to invoke the event functions), a retry policy with
# backoff, an ack deadline longer than its function's timeout (a slow handler is not
# redelivered while it still runs), and a dead-letter policy (a message that keeps failing is
# parked instead of retried forever).

# Who may publish on training-requests (grants in iam.tf, topic_grants): the submit and
# reconcile accounts, which publish job references without an owner, and the principals in
# var.request_publisher_members, other services that publish full requests. Those are
# trusted to name the owner of each job (the `owner` attribute; dispatch checks its format,
# and that a referenced job is that owner's, but cannot check who it is), so nobody else is
# granted publishing here. Jobs published without an owner share one per-owner allowance.

locals {
  topics = {
    requests      = "${var.prefix}-training-requests"
    events        = "${var.prefix}-job-events"
    notifications = "${var.prefix}-job-notifications"
  }

  # Consumed topics and the function each one is pushed to.
  push_subscriptions = {
    requests = {
      function              = "dispatch"
      max_delivery_attempts = var.dispatch_max_delivery_attempts
    }
    events = {
      function              = "on_job_event"
      max_delivery_attempts = var.event_max_delivery_attempts
    }
  }

  dead_letter_retention = "${var.dead_letter_retention_days * 86400}s"
}

resource "google_pubsub_topic" "topics" {
  for_each = local.topics
  name     = each.value
  labels   = local.labels
  # Kept a day, so a re-created subscription can seek back to what it missed.
  message_retention_duration = "86400s"
  depends_on                 = [google_project_service.enabled]
}

resource "google_pubsub_topic" "dead_letter" {
  for_each   = local.push_subscriptions
  name       = "${local.topics[each.key]}-dead-letter"
  labels     = local.labels
  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_subscription" "push" {
  for_each = local.push_subscriptions
  name     = "${local.topics[each.key]}-to-${replace(each.value.function, "_", "-")}"
  topic    = google_pubsub_topic.topics[each.key].id
  labels   = local.labels

  # Longer than the function may run, so a message is not redelivered while being handled.
  ack_deadline_seconds = local.functions[each.value.function].timeout_seconds + 60

  push_config {
    # functions-framework turns a wrapped Pub/Sub push request into a CloudEvent; it reads the
    # topic from this path.
    push_endpoint = "${google_cloudfunctions2_function.functions[each.value.function].service_config[0].uri}/projects/${var.project_id}/topics/${google_pubsub_topic.topics[each.key].name}"
    oidc_token {
      service_account_email = google_service_account.accounts["push-invoker"].email
      audience              = google_cloudfunctions2_function.functions[each.value.function].service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = each.value.max_delivery_attempts
  }

  # Never expire for inactivity: a quiet week must not delete the delivery path.
  expiration_policy {
    ttl = ""
  }
}

# Dead-lettered messages are kept here (a topic alone keeps nothing) for inspection and
# replay; nobody consumes them automatically, so they have no dead-letter policy themselves.
resource "google_pubsub_subscription" "dead_letter_store" {
  for_each                   = local.push_subscriptions
  name                       = "${google_pubsub_topic.dead_letter[each.key].name}-store"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  labels                     = merge(local.labels, { dead-letter-store = "true" })
  message_retention_duration = local.dead_letter_retention
  retain_acked_messages      = false
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = ""
  }
}
