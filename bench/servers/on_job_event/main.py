"""functions/on_job_event/main.py, instrumented (see bench/servers/instrument.py)."""

from bench.servers.instrument import log_deliveries
from functions.on_job_event import main as on_job_event

record_job_event = log_deliveries("on_job_event", on_job_event.record_job_event)
