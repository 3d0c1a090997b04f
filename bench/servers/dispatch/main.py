"""functions/dispatch/main.py, instrumented (see bench/servers/instrument.py)."""

from bench.servers.instrument import log_deliveries, recording_launcher
from functions.dispatch import main as dispatch

if (launcher := recording_launcher()) is not None:
    # Replaces the launcher of every tier that Services would build.
    dispatch.SERVICES.use(launcher=launcher)

dispatch_training_request = log_deliveries("dispatch", dispatch.dispatch_training_request)
