# The models volume on every trainer job, run by `terraform test` (make tf-check) against a
# mocked google provider, as design.tftest.hcl: the models bucket mounted read-only and limited
# to base_models/ (Cloud Storage FUSE only-dir), at the path the trainer is told
# (MODELS_MOUNT_PATH, MODELS_MOUNT_ONLY_DIR: tuning/settings.py), in the second generation
# environment, and read with the trainer's existing grant on the bucket, nothing broader.

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
  # A second Cloud Run tier: its job must get the same volume as the default one.
  trainer_launch_stage = "BETA"
  gpu_tiers = [
    { name = "big", gpu_type = "nvidia-rtx-pro-6000", cpu = "20", memory = "80Gi", max_concurrent_jobs = 2 },
  ]
}

run "every_trainer_job_mounts_base_models_read_only" {
  command = plan

  assert {
    condition = alltrue([
      for job in google_cloud_run_v2_job.trainer : (
        length(job.template[0].template[0].volumes) == 1
        && job.template[0].template[0].volumes[0].name == "models"
        && job.template[0].template[0].volumes[0].gcs[0].bucket == "tuning-tfcheck-project-models"
        && job.template[0].template[0].volumes[0].gcs[0].read_only == true
        && job.template[0].template[0].volumes[0].gcs[0].mount_options == tolist(["only-dir=base_models"])
      )
    ])
    error_message = "Every trainer job mounts the models bucket read-only, limited to base_models/ (only-dir): jobs' outputs stay out of the volume."
  }
  assert {
    condition = alltrue([
      for job in google_cloud_run_v2_job.trainer : (
        length(job.template[0].template[0].containers[0].volume_mounts) == 1
        && job.template[0].template[0].containers[0].volume_mounts[0].name == "models"
        && job.template[0].template[0].containers[0].volume_mounts[0].mount_path == "/mnt/models"
      )
    ])
    error_message = "The trainer container mounts the models volume at /mnt/models."
  }
  assert {
    condition     = alltrue([for job in google_cloud_run_v2_job.trainer : job.template[0].template[0].execution_environment == "EXECUTION_ENVIRONMENT_GEN2"])
    error_message = "Cloud Storage volumes need the second generation execution environment."
  }
  assert {
    condition = alltrue([
      for job in google_cloud_run_v2_job.trainer : (
        one([for env in job.template[0].template[0].containers[0].env : env.value if env.name == "MODELS_MOUNT_PATH"]) == job.template[0].template[0].containers[0].volume_mounts[0].mount_path
        && one([for env in job.template[0].template[0].containers[0].env : env.value if env.name == "MODELS_MOUNT_ONLY_DIR"]) == "base_models"
      )
    ])
    error_message = "The trainer is told where the volume is (MODELS_MOUNT_PATH = the mount path) and which folder it shows (MODELS_MOUNT_ONLY_DIR = only-dir)."
  }
  assert {
    condition = (
      [for key, grant in google_storage_bucket_iam_member.grants : grant.role if startswith(key, "trainer models ")] == ["roles/storage.objectUser"]
      && length([for key, grant in google_storage_bucket_iam_member.grants : key if startswith(key, "trainer ")]) == 3
    )
    error_message = "The volume reads with the trainer's one grant on the models bucket (objectUser, for its outputs already); nothing is added or broadened."
  }
}
