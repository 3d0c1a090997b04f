# The operator's GPU prices and throughputs (var.gpu_pricing), run by `terraform test`
# (make tf-check) against a mocked google provider, as design.tftest.hcl: every function gets
# them as GPU_PRICING (JSON, read by tuning/settings.py with tuning/pricing.py's parser), and the
# variable refuses what that parser would. tests/unit/test_pricing.py parses what jsonencode
# writes for an attribute left unset (null).

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

run "every_function_gets_the_operator_s_figures" {
  command = plan
  variables {
    gpu_pricing = {
      "nvidia-l4"        = { usd_per_gpu_hour = 1.42, tokens_per_second = 4000 }
      "NVIDIA_H100_80GB" = { usd_per_gpu_hour = 11.5 }
    }
  }
  assert {
    condition = alltrue([
      for function in google_cloudfunctions2_function.functions :
      jsondecode(function.service_config[0].environment_variables["GPU_PRICING"]) == {
        "nvidia-l4"        = { usd_per_gpu_hour = 1.42, tokens_per_second = 4000 }
        "NVIDIA_H100_80GB" = { usd_per_gpu_hour = 11.5, tokens_per_second = null }
      }
    ])
    error_message = "Every function reads the same GPU_PRICING: the operator's figures per GPU type."
  }
}

run "without_figures_the_tables_are_used" {
  command = plan
  assert {
    condition = alltrue([
      for function in google_cloudfunctions2_function.functions :
      function.service_config[0].environment_variables["GPU_PRICING"] == "{}"
    ])
    error_message = "Without gpu_pricing the functions get an empty GPU_PRICING (the built-in tables)."
  }
}

run "refuses_a_gpu_type_no_tier_can_use" {
  command = plan
  variables {
    gpu_pricing = { "nvidia-h100" = { usd_per_gpu_hour = 3 } }
  }
  expect_failures = [var.gpu_pricing]
}

run "refuses_an_entry_without_figures" {
  command = plan
  variables {
    gpu_pricing = { "nvidia-l4" = {} }
  }
  expect_failures = [var.gpu_pricing]
}

run "refuses_a_price_of_zero" {
  command = plan
  variables {
    gpu_pricing = { "nvidia-l4" = { usd_per_gpu_hour = 0 } }
  }
  expect_failures = [var.gpu_pricing]
}

run "refuses_a_negative_throughput" {
  command = plan
  variables {
    gpu_pricing = { "NVIDIA_L4" = { tokens_per_second = -5 } }
  }
  expect_failures = [var.gpu_pricing]
}
