"""The cold-start baseline: functions-framework and the Google clients, nothing of ours.

It imports the three client libraries every function of ours ends up using, as a
function that created its clients at import would; `bare_http` and `bare_cloud_event`
answer at once. `bare_claim` and `bare_cloud_event` with BARE_RECORD_FILE set are
baselines of bench/event_path.py.
"""

import base64
import json
import os
import time

import functions_framework
from google.cloud import firestore, pubsub_v1, storage  # noqa: F401 - imported for their cost


@functions_framework.http
def bare_http(request):
    return {"status": "ok"}


@functions_framework.cloud_event
def bare_cloud_event(cloud_event):
    if os.environ.get("BARE_RECORD_FILE"):  # the no-op consumer of bench/event_path.py
        message_id = cloud_event.data["message"]["messageId"]
        with open(os.environ["BARE_RECORD_FILE"], "a") as record:
            record.write(json.dumps({"message_id": message_id, "end": time.time()}) + "\n")


@functions_framework.cloud_event
def bare_claim(cloud_event):
    """The least a dispatcher does: claim the job in one transaction, note when (a baseline)."""
    message = cloud_event.data["message"]
    job_id = json.loads(base64.b64decode(message["data"]))["job_id"]
    document = _client().collection(os.environ["BARE_COLLECTION"]).document(job_id)

    @firestore.transactional
    def claim(transaction):
        document.get(transaction=transaction)
        transaction.update(document, {"dispatch_claim": message["messageId"]})

    claim(_client().transaction())
    with open(os.environ["BARE_RECORD_FILE"], "a") as record:
        record.write(json.dumps({"job_id": job_id, "at": time.time()}) + "\n")


_clients = []


def _client():
    if not _clients:
        _clients.append(firestore.Client())
    return _clients[0]
