# Topics (ARCHITECTURE.md "Topics"), the push subscriptions that deliver them to the
# functions, and a dead-letter topic for every consumed subscription.
#
# Delivery is explicit rather than through Eventarc triggers so that retries and
# dead-lettering are visible here: each push subscription has an OIDC identity (the push
# invoker account, the only one allowed to invoke the event functions), a retry policy with
# backoff, an ack deadline longer than its function's timeout (a slow handler is not
# redelivered while it still runs), and a dead-letter policy (a message that keeps failing is
# parked instead of retried forever).

# What a message keeps, and for how long. A published request names its secrets by
# reference: dispatch refuses one carrying a secret's value (hf_token, a W&B key) and
# acknowledges it at once (tuning/dispatching.py, SecretInMessageError), so no redelivery
# or dead letter ever holds one. Still, a request's bytes (dataset, model, owner, secret
# names) are kept no longer than delivery needs:
# - topic retention (unlike subscription retention) keeps messages after they were
#   acknowledged, for seeking back; training-requests sets none, so an acknowledged request
#   is discarded at once. Its job is in Firestore from the first delivery, and reconcile
#   republishes a queued job that was never launched, so nothing needs replaying (the
#   price: a request published while its subscription is being re-created is lost, where
#   topic retention would let the new subscription seek back to it).
#   https://cloud.google.com/pubsub/docs/replay-overview ("Topic message retention": by
#   default a topic discards a message once every subscription acknowledged it; with
#   retention set, a subscription keeps an unacknowledged message for the longer of the
#   topic's and its own retention, 10 minutes to 31 days)
# - subscription retention applies to unacknowledged messages (acknowledged ones too only
#   with retain_acked_messages, left off): after it "Pub/Sub might discard the message
#   independent of the acknowledgment state", default 7 days, 10 minutes to 31 days.
#   https://cloud.google.com/pubsub/docs/subscription-properties ("Message retention
#   duration"). The push subscription of training-requests keeps a message for its whole
#   retry schedule (each attempt waits at most the ack deadline, then at most the maximum
#   backoff, up to max_delivery_attempts before it is dead-lettered), twice over: Pub/Sub
#   adjusts the push rate to the rate of successes, so failing attempts may come slower
#   than the retry policy says (https://cloud.google.com/pubsub/docs/push, "Push
#   subscription workflow"). Shorter, and a request that keeps failing would expire
#   instead of being dead-lettered.

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

  # Acknowledged messages kept on the topic. Events and notifications a day, so a
  # re-created subscription can seek back to what it missed; requests not at all (above).
  topic_retention = {
    requests      = null
    events        = "86400s"
    notifications = "86400s"
  }

  # Consumed topics and the function each one is pushed to; `retained` says whether its
  # push subscription keeps unacknowledged messages only for their retry schedule (above)
  # rather than Pub/Sub's default 7 days.
  push_subscriptions = {
    requests = {
      function              = "dispatch"
      max_delivery_attempts = var.dispatch_max_delivery_attempts
      retained_for_delivery = true
    }
    events = {
      function              = "on_job_event"
      max_delivery_attempts = var.event_max_delivery_attempts
      retained_for_delivery = false
    }
  }

  push_ack_deadline_seconds = {
    for key, subscription in local.push_subscriptions :
    key => local.functions[subscription.function].timeout_seconds + 60
  }
  push_maximum_backoff_seconds = 600
  # Seconds the retry schedule of each push subscription can take at most, and twice
  # that, within Pub/Sub's 10 minutes to 31 days, as the retention of those kept for it.
  push_retry_schedule_seconds = {
    for key, subscription in local.push_subscriptions :
    key => subscription.max_delivery_attempts * (local.push_ack_deadline_seconds[key] + local.push_maximum_backoff_seconds)
  }
  push_retention = {
    for key, subscription in local.push_subscriptions :
    key => subscription.retained_for_delivery ? "${min(max(2 * local.push_retry_schedule_seconds[key], 600), 2678400)}s" : null
  }

  dead_letter_retention = "${var.dead_letter_retention_days * 86400}s"
}

resource "google_pubsub_topic" "topics" {
  for_each = local.topics
  name     = each.value
  labels   = local.labels
  # What each keeps after acknowledgement: local.topic_retention says why.
  message_retention_duration = local.topic_retention[each.key]
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
  ack_deadline_seconds = local.push_ack_deadline_seconds[each.key]
  # Unacknowledged messages, for their retry schedule (requests) or Pub/Sub's default;
  # acknowledged ones not at all.
  message_retention_duration = local.push_retention[each.key]
  retain_acked_messages      = false

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
    maximum_backoff = "${local.push_maximum_backoff_seconds}s"
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
# What training-requests' store holds: requests and job references that exhausted their
# delivery attempts (capacity waits longer than the attempts allow, or errors that stayed
# transient), never a secret's value and never a request refused at parse (dispatch
# acknowledges every message that can never succeed: a malformed one, a bad owner, a
# secret's value). Their jobs are in Firestore already (a full request's from its first
# delivery that reached Firestore), so the store is for an operator investigating, for
# var.dead_letter_retention_days; its topic keeps nothing itself.
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
