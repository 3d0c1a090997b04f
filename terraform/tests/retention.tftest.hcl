# How long Pub/Sub keeps a training request (terraform/pubsub.tf says why): not after it is
# acknowledged, and unacknowledged only as long as its delivery attempts can take. Run by
# `terraform test` (make tf-check) against a mocked google provider, as design.tftest.hcl.
# The mock invents values for optional attributes left unset, so what is left unset is
# asserted on the locals that set it.

mock_provider "google" {
  mock_data "google_project" {
    defaults = {
      number = "123456789012"
    }
  }
}

variables {
  project_id          = "tfcheck-project"
  prefix              = "tuning"
  api_invoker_members = ["group:ml-team@example.com"]
}

run "requests_are_kept_only_for_delivery" {
  # apply: an attribute left unset is only known (mocked) after it.
  command = apply

  assert {
    condition     = local.topic_retention["requests"] == null
    error_message = "training-requests must not retain acknowledged messages (topic message_retention_duration unset)."
  }
  assert {
    condition = (
      google_pubsub_subscription.push["requests"].message_retention_duration == local.push_retention["requests"]
      && google_pubsub_subscription.push["requests"].retain_acked_messages == false
    )
    error_message = "The push subscription of training-requests must keep unacknowledged requests for their delivery, and acknowledged ones not at all."
  }
  assert {
    # 100 attempts x (ack deadline: the function's 120 s + 60 s; maximum backoff 600 s),
    # twice: about 43 hours, under Pub/Sub's 7-day default.
    condition     = local.push_retention["requests"] == "${2 * 100 * (local.functions["dispatch"].timeout_seconds + 60 + 600)}s"
    error_message = "Requests are kept twice their retry schedule (attempts x (ack deadline + maximum backoff))."
  }
  assert {
    condition = (
      tonumber(trimsuffix(local.push_retention["requests"], "s")) >= local.push_retry_schedule_seconds["requests"]
      && tonumber(trimsuffix(local.push_retention["requests"], "s")) < 7 * 86400
    )
    error_message = "A request must outlive its delivery attempts (else it expires instead of being dead-lettered), and be kept less than Pub/Sub's 7-day default."
  }
  assert {
    condition     = google_pubsub_subscription.push["requests"].retry_policy[0].maximum_backoff == "${local.push_maximum_backoff_seconds}s"
    error_message = "The retention is computed from the maximum backoff the retry policy uses."
  }
}

run "fewest_attempts_still_reach_the_dead_letter_topic" {
  command = plan

  variables {
    dispatch_max_delivery_attempts = 5
  }

  assert {
    condition     = local.push_retention["requests"] == "${2 * 5 * (local.functions["dispatch"].timeout_seconds + 60 + 600)}s"
    error_message = "The retention must follow dispatch_max_delivery_attempts."
  }
}
