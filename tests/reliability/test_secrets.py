"""Secrets: after the whole tier, no submitted token value is anywhere but the secret store.

Runs last (by file name) and scans everything the other tests left: every Firestore
document (subcollections too), every GCS object, every file under the session's
temporary folder (function, execution and trainer logs, delivery logs, emulator logs)
and every message captured on every topic (dead letters included). The local secret
store, Secret Manager's stand-in, is the one place the values may be, and the scan
is shown to find them there (so a miss is not a blind scanner).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import Ledger
from tuning.gcp.pubsub import subscription_path

SECRET_STORE = "secrets.json"  # each stack's local secret store (and its .lock beside it)


def firestore_documents(project: str) -> list[bytes]:
    """Every document of the project, as text: top-level collections and all below them."""
    from google.cloud import firestore

    client = firestore.Client(project=project)
    texts: list[bytes] = []

    def walk(collection: Any) -> list[Any]:
        below = []
        for snapshot in collection.stream():
            texts.append(repr(snapshot.to_dict()).encode())
            below.extend(snapshot.reference.collections())
        return below

    pending = list(client.collections())
    with ThreadPoolExecutor(max_workers=8) as pool:
        while pending:
            pending = [c for found in pool.map(walk, pending) for c in found]
    return texts


def gcs_objects() -> list[bytes]:
    """Every object of every bucket, with its name and metadata."""
    from google.cloud import storage

    client = storage.Client()
    blobs = [blob for bucket in client.list_buckets() for blob in client.list_blobs(bucket)]

    def read(blob: Any) -> bytes:
        return f"{blob.name} {blob.metadata}".encode() + blob.download_as_bytes()

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(read, blobs))


def captured_messages(ledger: Ledger, emulator_host: str) -> list[bytes]:
    """Everything published on the stacks' topics, drained from their capture subscriptions."""
    import grpc
    from google.api_core import exceptions
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    # The bad-input tests publish messages of several MB: more than gRPC's default 4 MiB
    # answer, so pulling many at once needs a channel without that limit.
    unlimited = [("grpc.max_receive_message_length", -1)]
    channel = grpc.insecure_channel(emulator_host, options=unlimited)
    subscriber = pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
    messages = []

    def drain(path: str) -> dict[str, Any]:
        # Deprecated in GCP, but the emulator honours it: an empty pull answers at once
        # instead of waiting out its deadline, once per subscription.
        return {"subscription": path, "max_messages": 1000, "return_immediately": True}

    for stack in ledger.stacks:
        for name in stack.captures:
            path = subscription_path(stack.settings.project_id, name)
            while True:
                try:
                    answer = subscriber.pull(request=drain(path), timeout=10)
                except exceptions.DeadlineExceeded:
                    break
                if not answer.received_messages:
                    break
                subscriber.acknowledge(
                    subscription=path, ack_ids=[m.ack_id for m in answer.received_messages]
                )
                messages += [
                    bytes(m.message.data) + repr(dict(m.message.attributes)).encode()
                    for m in answer.received_messages
                ]
    return messages


def files_under(root: Path) -> tuple[list[bytes], list[bytes]]:
    """(every file but the secret stores, the secret stores)."""
    others, stores = [], []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            (stores if path.name.startswith(SECRET_STORE) else others).append(path.read_bytes())
    return others, stores


@pytest.mark.filterwarnings("ignore:The return_immediately flag is deprecated")
def test_no_token_value_is_anywhere_but_the_secret_store(
    ledger: Ledger, emulators: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not ledger.tokens:
        pytest.skip("no tokens were submitted: the scan runs after the rest of the tier")
    pattern = re.compile(b"|".join(re.escape(token.encode()) for token in ledger.tokens))
    files, stores = files_under(tmp_path_factory.getbasetemp())
    places = {
        "firestore document": firestore_documents(emulators["GOOGLE_CLOUD_PROJECT"]),
        "gcs object": gcs_objects(),
        "pubsub message": captured_messages(ledger, emulators["PUBSUB_EMULATOR_HOST"]),
        "file": files,
    }
    found = [
        f"{place}: ...{match.group().decode()[:12]}..."
        for place, items in places.items()
        for item in items
        if (match := pattern.search(item))
    ]
    ledger.add("secrets found", len(found))
    in_store = {match.group() for store in stores for match in pattern.finditer(store)}

    assert found == []
    assert {place: len(items) for place, items in places.items() if not items} == {}
    assert in_store, "not even the secret stores hold a token: the scan cannot see"
