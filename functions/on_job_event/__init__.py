"""The on_job_event function: job-events -> the job's record in Firestore."""
