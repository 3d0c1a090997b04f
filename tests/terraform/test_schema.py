"""The provider schema the offline checks use: how it is extracted, and what is committed."""

from __future__ import annotations

import gzip
import json
import re
import sys
from typing import Any

from tests.terraform.conftest import REPO

sys.path.insert(0, str(REPO / "tools" / "tfcheck"))
import extract_schema

SCHEMA = REPO / "tools" / "tfcheck" / "google-provider-schema.json.gz"
DOCS = "https://registry.terraform.io/providers/hashicorp/google/8.7.0/docs"
PACKAGE = "@cdktn/provider-google"


def link(kind: str, resource: str, attribute: str) -> dict[str, Any]:
    return {
        "summary": "x",
        "remarks": f"{{@link {DOCS}/{kind}/{resource}#{attribute} X#{attribute}}}",
    }


def assembly() -> dict[str, Any]:
    """A two-type jsii assembly shaped like the CDK bindings: a resource with a nested block."""
    module = f"{PACKAGE}.pubsubSubscription"
    string = {"primitive": "string"}
    return {
        "types": {
            f"{module}.PubsubSubscription": {
                "kind": "class",
                "docs": {
                    "summary": f"Represents a {{@link {DOCS}/resources/pubsub_subscription "
                    "google_pubsub_subscription}."
                },
                "initializer": {
                    "parameters": [{"type": {"fqn": f"{module}.PubsubSubscriptionConfig"}}]
                },
                "properties": [
                    {"name": "name", "type": string},
                    {"name": "nameInput", "type": string},
                    {"name": "effectiveLabels", "type": {"fqn": "cdktn.StringMap"}},
                ],
            },
            f"{module}.PubsubSubscriptionConfig": {
                "kind": "interface",
                "datatype": True,
                "interfaces": ["cdktn.TerraformMetaArguments"],
                "properties": [
                    {"name": "name", "type": string, "docs": link("resources", "x", "name")},
                    {
                        "name": "ackDeadlineSeconds",
                        "optional": True,
                        "type": {"primitive": "number"},
                        "docs": link("resources", "x", "ack_deadline_seconds"),
                    },
                    {
                        "name": "deadLetterPolicy",
                        "optional": True,
                        "type": {"fqn": f"{module}.PubsubSubscriptionDeadLetterPolicy"},
                        "docs": link("resources", "x", "dead_letter_policy"),
                    },
                    {"name": "dependsOn", "optional": True, "type": string},
                ],
            },
            f"{module}.PubsubSubscriptionDeadLetterPolicy": {
                "kind": "interface",
                "datatype": True,
                "properties": [
                    {
                        "name": "maxDeliveryAttempts",
                        "optional": True,
                        "type": {"primitive": "number"},
                        "docs": link("resources", "x", "max_delivery_attempts"),
                    }
                ],
            },
            f"{PACKAGE}.provider.GoogleProvider": {
                "kind": "class",
                "docs": {"summary": f"Represents a {{@link {DOCS} google}}."},
                "initializer": {
                    "parameters": [{"type": {"fqn": f"{PACKAGE}.provider.GoogleProviderConfig"}}]
                },
            },
            f"{PACKAGE}.provider.GoogleProviderConfig": {
                "kind": "interface",
                "datatype": True,
                "properties": [
                    {"name": "alias", "optional": True, "type": string},
                    {
                        "name": "project",
                        "optional": True,
                        "type": string,
                        "docs": link("", "", "project"),
                    },
                ],
            },
        }
    }


def test_extraction_tells_blocks_from_arguments_and_required_from_optional() -> None:
    schema = extract_schema.extract(assembly(), "synthetic")

    provider = schema["provider_schemas"]["registry.terraform.io/hashicorp/google"]
    block = provider["resource_schemas"]["google_pubsub_subscription"]["block"]
    assert block["attributes"]["name"] == {"type": "string", "required": True}
    assert block["attributes"]["ack_deadline_seconds"]["optional"] is True
    assert block["attributes"]["effective_labels"] == {"type": ["map", "string"], "computed": True}
    assert "depends_on" not in block["attributes"]  # a meta-argument, not the provider's
    dead_letter = block["block_types"]["dead_letter_policy"]
    assert dead_letter["nesting_mode"] == "list" and dead_letter["max_items"] == 1
    assert "max_delivery_attempts" in dead_letter["block"]["attributes"]
    assert "alias" not in provider["provider"]["block"]["attributes"]
    assert schema["generated_from"]["provider"] == "hashicorp/google 8.7.0"


def test_the_committed_schema_records_its_source_and_covers_the_configuration() -> None:
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    used = set()
    for path in (REPO / "terraform").glob("*.tf"):
        used.update(re.findall(r'^(?:resource|data) "(google_\w+)"', path.read_text(), re.M))

    provider = schema["provider_schemas"]["registry.terraform.io/hashicorp/google"]
    known = set(provider["resource_schemas"]) | set(provider["data_source_schemas"])
    assert schema["generated_from"]["package"].startswith("cdktn-provider-google==")
    assert schema["generated_from"]["provider"] == "hashicorp/google 8.7.0"
    assert used and used <= known
    versions = (REPO / "terraform" / "versions.tf").read_text()
    assert 'version = "~> 8.7"' in versions, "versions.tf and the committed schema disagree"
