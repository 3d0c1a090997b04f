# Who may train on a GPU tier (gpu_tiers[*].allowed_callers, review finding F3), run by
# `terraform test` (make tf-check) against a mocked google provider: the functions' GPU_TIERS
# carries a tier's callers, a tier open to everyone (the default) is written as before, and
# the variable refuses IAM member forms and non-identities.
# tests/terraform/test_vertex_tiers.py reads such a GPU_TIERS back with tuning/tiers.py.

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

run "a_tier_s_callers_reach_every_function_s_gpu_tiers" {
  command = plan
  variables {
    gpu_tiers = [
      {
        name            = "h100x8"
        engine          = "vertex"
        gpu_type        = "NVIDIA_H100_80GB"
        gpu_count       = 8
        machine_type    = "a3-highgpu-8g"
        allowed_callers = ["carol@example.com", "training-bot@proj.iam.gserviceaccount.com"]
      },
      { name = "l4-more", gpu_type = "nvidia-l4", allowed_callers = ["carol@example.com"] },
    ]
  }
  assert {
    condition = (
      [for tier in jsondecode(local.gpu_tiers_setting) : lookup(tier, "allowed_callers", null)] == [
        null,
        ["carol@example.com", "training-bot@proj.iam.gserviceaccount.com"],
        ["carol@example.com"],
      ]
      && jsonencode(jsondecode(local.gpu_tiers_setting)) == local.gpu_tiers_setting
    )
    error_message = "GPU_TIERS must carry each restricted tier's allowed_callers, and none for the default tier (open to every caller)."
  }
  assert {
    condition = alltrue([
      for function in google_cloudfunctions2_function.functions :
      function.service_config[0].environment_variables["GPU_TIERS"] == local.gpu_tiers_setting
    ])
    error_message = "Every function reads the same GPU_TIERS, callers included (dispatch places published requests by them too)."
  }
}

run "a_tier_open_to_every_caller_is_written_as_before" {
  command = plan
  variables {
    gpu_tiers = [
      { name = "big", gpu_type = "nvidia-l4", max_concurrent_jobs = 2 },
      { name = "open", gpu_type = "nvidia-l4", allowed_callers = ["*"] },
    ]
  }
  assert {
    condition = local.gpu_tiers_setting == jsonencode([
      { name = "default", engine = "cloudrun", gpu_type = "nvidia-l4", gpu_memory_gib = 22.4, max_concurrent_jobs = 4, cloud_run_job = "tuning-trainer" },
      { name = "big", engine = "cloudrun", gpu_type = "nvidia-l4", gpu_memory_gib = 22.4, max_concurrent_jobs = 2, cloud_run_job = "tuning-trainer-big" },
      { name = "open", engine = "cloudrun", gpu_type = "nvidia-l4", gpu_memory_gib = 22.4, max_concurrent_jobs = 1, cloud_run_job = "tuning-trainer-open" },
    ])
    error_message = "A tier open to every caller (unset or [\"*\"]) must leave allowed_callers out of GPU_TIERS, as it was before."
  }
}

# --- What the variable refuses ---------------------------------------------------------------

run "refuses_an_iam_member_instead_of_an_identity" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", gpu_type = "nvidia-l4", allowed_callers = ["user:carol@example.com"] }]
  }
  expect_failures = [var.gpu_tiers]
}

run "refuses_a_group_which_no_token_can_prove" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", gpu_type = "nvidia-l4", allowed_callers = ["group:ml-team@example.com"] }]
  }
  expect_failures = [var.gpu_tiers]
}

run "refuses_a_caller_with_spaces" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", gpu_type = "nvidia-l4", allowed_callers = ["carol @example.com"] }]
  }
  expect_failures = [var.gpu_tiers]
}

run "refuses_an_empty_list_of_callers" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", gpu_type = "nvidia-l4", allowed_callers = [] }]
  }
  expect_failures = [var.gpu_tiers]
}
