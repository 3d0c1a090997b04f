# Vertex AI tiers (gpu_tiers entries with engine "vertex"), run by `terraform test`
# (make tf-check) against a mocked google provider, as design.tftest.hcl: what a vertex tier
# adds (the API, two custom roles and their grants, the functions' TRAINER_IMAGE and
# TRAINER_SERVICE_ACCOUNT, its GPU_TIERS entry), that none of it exists without one, and
# the tiers the variable refuses. tests/terraform/test_vertex_tiers.py checks the GPU_TIERS
# such a tier produces with tuning/tiers.py's own parser.

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

run "a_vertex_tier_gets_the_api_roles_grants_and_environment" {
  # apply: the roles' ids and the trainer account's email are only known (mocked) after it.
  command = apply
  variables {
    gpu_tiers = [
      {
        name                 = "h100x8"
        engine               = "vertex"
        gpu_type             = "NVIDIA_H100_80GB"
        gpu_count            = 8
        machine_type         = "a3-highgpu-8g"
        region               = "us-east5"
        max_concurrent_jobs  = 2
        task_timeout_seconds = 604800
      },
    ]
  }

  assert {
    condition     = contains(keys(google_project_service.enabled), "aiplatform.googleapis.com")
    error_message = "A vertex tier needs the Vertex AI API (aiplatform.googleapis.com) enabled."
  }
  assert {
    condition = (
      google_project_iam_custom_role.roles["customJobCreator"].permissions == tolist(["aiplatform.customJobs.create"])
      && google_project_iam_custom_role.roles["customJobCanceller"].permissions == tolist(["aiplatform.customJobs.cancel", "aiplatform.customJobs.get"])
    )
    error_message = "The Vertex roles hold aiplatform.customJobs.create (creator) and .get and .cancel (canceller), nothing else."
  }
  assert {
    condition = (
      sort(keys({ for key, grant in google_project_iam_member.grants : key => grant if strcontains(key, "customJob") }))
      == tolist(["delete custom:customJobCanceller", "dispatch custom:customJobCanceller", "dispatch custom:customJobCreator", "reconcile custom:customJobCanceller"])
      && alltrue([
        for key, grant in google_project_iam_member.grants :
        grant.member == "serviceAccount:${google_service_account.accounts[split(" ", key)[0]].email}"
        && grant.role == google_project_iam_custom_role.roles[trimprefix(split(" ", key)[1], "custom:")].id
        && grant.project == "tfcheck-project"
        && length(grant.condition) == 0
        if strcontains(key, "customJob")
      ])
    )
    error_message = "Dispatch, delete and reconcile read and cancel custom jobs on the project; only dispatch creates them."
  }
  assert {
    condition = (
      google_service_account_iam_member.grants["dispatch trainer roles/iam.serviceAccountUser"].service_account_id == google_service_account.accounts["trainer"].name
      && google_service_account_iam_member.grants["dispatch trainer roles/iam.serviceAccountUser"].member == "serviceAccount:${google_service_account.accounts["dispatch"].email}"
    )
    error_message = "Dispatch creates custom jobs that run as the trainer account: it needs actAs on that account (Service Account User)."
  }
  assert {
    condition = alltrue([
      for function in google_cloudfunctions2_function.functions :
      function.service_config[0].environment_variables["TRAINER_IMAGE"] == google_cloud_run_v2_job.trainer["default"].template[0].template[0].containers[0].image
      && function.service_config[0].environment_variables["TRAINER_SERVICE_ACCOUNT"] == google_service_account.accounts["trainer"].email
    ])
    error_message = "With a vertex tier every function gets TRAINER_IMAGE (the Cloud Run trainer's image) and TRAINER_SERVICE_ACCOUNT (the trainer account's email)."
  }
  assert {
    condition     = keys(google_cloud_run_v2_job.trainer) == ["default"]
    error_message = "A vertex tier has no Cloud Run job of its own."
  }
  assert {
    condition = (
      [for tier in jsondecode(local.gpu_tiers_setting) : tier.name] == ["default", "h100x8"]
      && jsondecode(local.gpu_tiers_setting)[1] == {
        name                 = "h100x8"
        engine               = "vertex"
        gpu_type             = "NVIDIA_H100_80GB"
        gpu_count            = 8
        gpu_memory_gib       = 79.6
        machine_type         = "a3-highgpu-8g"
        region               = "us-east5"
        max_concurrent_jobs  = 2
        task_timeout_seconds = 604800
      }
      && jsonencode(jsondecode(local.gpu_tiers_setting)) == local.gpu_tiers_setting
    )
    error_message = "GPU_TIERS must list the vertex tier with its machine, GPUs, memory per GPU, region and timeout, and no cloud_run_job."
  }
  assert {
    condition     = alltrue([for grant in local.project_grants : length(grant.why) >= 20])
    error_message = "Every grant needs a `why` saying what the account does with it."
  }
}

run "without_a_vertex_tier_nothing_of_vertex_exists" {
  command = plan
  variables {
    trainer_launch_stage = "BETA"
    gpu_tiers = [
      { name = "big", gpu_type = "nvidia-rtx-pro-6000", cpu = "20", memory = "80Gi", max_concurrent_jobs = 2 },
    ]
  }
  assert {
    condition = (
      !contains(keys(google_project_service.enabled), "aiplatform.googleapis.com")
      && !anytrue([for key in keys(google_project_iam_custom_role.roles) : strcontains(key, "customJob")])
      && !anytrue([for grant in local.project_grants : strcontains(grant.role, "customJob")])
    )
    error_message = "Without a vertex tier there is no Vertex AI API, no custom job role and no grant of one."
  }
  assert {
    condition = alltrue([
      for function in google_cloudfunctions2_function.functions :
      !contains(keys(function.service_config[0].environment_variables), "TRAINER_IMAGE")
      && !contains(keys(function.service_config[0].environment_variables), "TRAINER_SERVICE_ACCOUNT")
    ])
    error_message = "Without a vertex tier the functions' environment is unchanged: no TRAINER_IMAGE, no TRAINER_SERVICE_ACCOUNT."
  }
  assert {
    # What earlier versions wrote for Cloud Run tiers (one jsonencode of the list), byte for byte.
    condition = local.gpu_tiers_setting == jsonencode([
      { name = "default", engine = "cloudrun", gpu_type = "nvidia-l4", gpu_memory_gib = 22.4, max_concurrent_jobs = 4, cloud_run_job = "tuning-trainer" },
      { name = "big", engine = "cloudrun", gpu_type = "nvidia-rtx-pro-6000", gpu_memory_gib = 95.5, max_concurrent_jobs = 2, cloud_run_job = "tuning-trainer-big" },
    ])
    error_message = "GPU_TIERS of Cloud Run tiers must stay what it was."
  }
}

run "no_tiers_nothing_of_vertex_exists" {
  command = plan
  assert {
    condition = (
      !contains(keys(google_project_service.enabled), "aiplatform.googleapis.com")
      && !anytrue([for key in keys(google_project_iam_custom_role.roles) : strcontains(key, "customJob")])
      && alltrue([for function in google_cloudfunctions2_function.functions : !contains(keys(function.service_config[0].environment_variables), "TRAINER_IMAGE")])
    )
    error_message = "The default deployment has nothing of Vertex AI."
  }
}

run "a_vertex_l4_tier_counts_its_machine_s_gpus" {
  command = plan
  variables {
    gpu_tiers = [
      { name = "l4x4", engine = "vertex", gpu_type = "NVIDIA_L4", gpu_count = 4, machine_type = "g2-standard-48" },
      { name = "a100", engine = "vertex", gpu_type = "NVIDIA_TESLA_A100", gpu_count = 16, machine_type = "a2-megagpu-16g" },
    ]
  }
  assert {
    condition = (
      [for tier in jsondecode(local.gpu_tiers_setting) : "${tier.name}:${tier.engine}:${try(tier.gpu_count, 1)}:${tier.gpu_memory_gib}"]
      == ["default:cloudrun:1:22.4", "l4x4:vertex:4:22.4", "a100:vertex:16:40"]
      && !can(jsondecode(local.gpu_tiers_setting)[1].region)
      && !can(jsondecode(local.gpu_tiers_setting)[1].task_timeout_seconds)
    )
    error_message = "Vertex tiers of L4 and A100 40GB machines must be listed with their GPU count and memory, region and timeout left out when unset."
  }
}

# --- What the variable refuses ---------------------------------------------------------------

run "refuses_a_vertex_tier_without_machine_type" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", engine = "vertex", gpu_type = "NVIDIA_H100_80GB", gpu_count = 8 }]
  }
  expect_failures = [var.gpu_tiers]
}

run "refuses_an_unknown_accelerator" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", engine = "vertex", gpu_type = "nvidia-h100-80gb", gpu_count = 8, machine_type = "a3-highgpu-8g" }]
  }
  expect_failures = [var.gpu_tiers]
}

run "refuses_a_machine_without_the_tier_s_gpus" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", engine = "vertex", gpu_type = "NVIDIA_H100_80GB", gpu_count = 8, machine_type = "a2-ultragpu-8g" }]
  }
  expect_failures = [var.gpu_tiers]
}

run "refuses_a_gpu_count_other_than_the_machine_s" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", engine = "vertex", gpu_type = "NVIDIA_H100_80GB", gpu_count = 4, machine_type = "a3-highgpu-8g" }]
  }
  expect_failures = [var.gpu_tiers]
}

run "refuses_more_than_sixteen_gpus" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", engine = "vertex", gpu_type = "NVIDIA_TESLA_A100", gpu_count = 32, machine_type = "a2-megagpu-16g" }]
  }
  expect_failures = [var.gpu_tiers]
}

run "refuses_cloud_run_sizing_on_a_vertex_tier" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", engine = "vertex", gpu_type = "NVIDIA_H100_80GB", gpu_count = 8, machine_type = "a3-highgpu-8g", memory = "640Gi" }]
  }
  expect_failures = [var.gpu_tiers]
}

run "refuses_a_vertex_timeout_over_seven_days" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", engine = "vertex", gpu_type = "NVIDIA_H100_80GB", gpu_count = 8, machine_type = "a3-highgpu-8g", task_timeout_seconds = 604801 }]
  }
  expect_failures = [var.gpu_tiers]
}

run "refuses_a_machine_type_on_a_cloud_run_tier" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", gpu_type = "nvidia-l4", machine_type = "g2-standard-8" }]
  }
  expect_failures = [var.gpu_tiers]
}

run "refuses_several_gpus_on_a_cloud_run_tier" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", gpu_type = "nvidia-l4", gpu_count = 2 }]
  }
  expect_failures = [var.gpu_tiers]
}

run "refuses_an_unknown_engine" {
  command = plan
  variables {
    gpu_tiers = [{ name = "big", engine = "gke", gpu_type = "nvidia-l4" }]
  }
  expect_failures = [var.gpu_tiers]
}
