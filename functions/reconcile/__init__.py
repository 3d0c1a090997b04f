"""The reconcile function: Cloud Scheduler -> no job stays non-terminal forever."""
