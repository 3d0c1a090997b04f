"""A stand-in for terraform-provider-google that serves the real schema and touches nothing.

The registry is out of reach offline, so the provider binary cannot be installed; its schema
can (`extract_schema.py` takes it from the CDK bindings on PyPI). This process speaks
terraform's plugin protocol v6 (go-plugin's handshake, then gRPC over a unix socket with TLS;
the gRPC stubs are the ones generated in the PyPI package `tf`) and answers:

- GetProviderSchema: the extracted schema, so `terraform validate` checks every argument,
  block and reference against the provider's own schema, and `terraform test` with
  `mock_provider "google"` can mock it;
- Validate*/ConfigureProvider: no diagnostics (the real provider's value validators are
  not in the schema);
- PlanResourceChange: the proposed state with unset computed attributes unknown, as the
  real provider plans a create; ReadDataSource: the config with placeholders for computed
  attributes. Together these let `terraform plan` run offline, so checkov can scan the plan
  with every variable, local and for_each resolved.

Apply is refused: this is a checking tool, never a way to change a cloud project.

Run by terraform only (through `tfcheck.py`'s filesystem mirror); `--print-schema-stats` is
for people.
"""

# ruff: noqa: N802 - the servicer's method names are the plugin protocol's RPC names.

from __future__ import annotations

import base64
import gzip
import json
import os
import sys
import tempfile
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import msgpack
from msgpack.ext import ExtType
from tf.gen import grpc_controller_pb2 as controller_pb
from tf.gen import grpc_controller_pb2_grpc as controller_rpc
from tf.gen import grpc_stdio_pb2_grpc as stdio_rpc
from tf.gen import tfplugin_pb2 as pb
from tf.gen import tfplugin_pb2_grpc as rpc

SCHEMA_ENV = "TFCHECK_PROVIDER_SCHEMA"
# Optional: the resource and data source types to serve (comma-separated), for speed.
TYPES_ENV = "TFCHECK_PROVIDER_TYPES"
DEFAULT_SCHEMA = Path(__file__).with_name("google-provider-schema.json.gz")
PROVIDER_SOURCE = "registry.terraform.io/hashicorp/google"
_UNKNOWN = ExtType(0, b"\x00")
_NESTING = {
    "single": pb.Schema.NestedBlock.SINGLE,
    "list": pb.Schema.NestedBlock.LIST,
    "set": pb.Schema.NestedBlock.SET,
    "map": pb.Schema.NestedBlock.MAP,
    "group": pb.Schema.NestedBlock.GROUP,
}
# Placeholders a data source returns for computed attributes (plan only, never applied).
_PLACEHOLDER = {"string": "000000000000", "number": 0, "bool": False}


def load_schema(path: Path, only: set[str] | None = None) -> dict[str, Any]:
    """The provider's entry of a `terraform providers schema -json` document.

    With `only`, just those resource and data source types: terraform decodes the schema
    each time it starts the provider, and a configuration uses a few dozen of ~1,850 types.
    A type outside the schema is never served, so a misspelt type is still an error.
    """
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    schema = json.loads(raw)["provider_schemas"][PROVIDER_SOURCE]
    if only is not None:
        for kind in ("resource_schemas", "data_source_schemas"):
            schema[kind] = {name: spec for name, spec in schema[kind].items() if name in only}
    return schema


def block_pb(block: dict[str, Any]) -> pb.Schema.Block:
    attributes = [
        pb.Schema.Attribute(
            name=name,
            type=json.dumps(spec["type"]).encode(),
            required=bool(spec.get("required")),
            optional=bool(spec.get("optional")),
            computed=bool(spec.get("computed")),
            sensitive=bool(spec.get("sensitive")),
        )
        for name, spec in block.get("attributes", {}).items()
    ]
    block_types = [
        pb.Schema.NestedBlock(
            type_name=name,
            block=block_pb(spec["block"]),
            nesting=_NESTING[spec["nesting_mode"]],
            min_items=spec.get("min_items", 0),
            max_items=spec.get("max_items", 0),
        )
        for name, spec in block.get("block_types", {}).items()
    ]
    return pb.Schema.Block(version=0, attributes=attributes, block_types=block_types)


def _decode(value: pb.DynamicValue) -> Any:
    if value.json:
        return json.loads(value.json)
    if value.msgpack:
        return msgpack.unpackb(value.msgpack, ext_hook=lambda code, data: ExtType(code, data))
    return None


def _encode(value: Any) -> pb.DynamicValue:
    return pb.DynamicValue(msgpack=msgpack.packb(value))


def _fill_computed(value: Any, block: dict[str, Any], fill: Any) -> Any:
    """Replace null computed attributes of an object (recursively) with `fill(type)`."""
    if not isinstance(value, dict):
        return value
    result = dict(value)
    for name, spec in block.get("attributes", {}).items():
        if result.get(name) is None and spec.get("computed"):
            result[name] = fill(spec["type"])
    for name, spec in block.get("block_types", {}).items():
        nested = result.get(name)
        if isinstance(nested, list):
            result[name] = [_fill_computed(item, spec["block"], fill) for item in nested]
        elif isinstance(nested, dict) and spec["nesting_mode"] in {"single", "group"}:
            result[name] = _fill_computed(nested, spec["block"], fill)
    return result


def _placeholder(cty_type: Any) -> Any:
    if isinstance(cty_type, str):
        return _PLACEHOLDER.get(cty_type)
    return None  # collections and objects: null is a known value


class StandInProvider(rpc.ProviderServicer):
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.resources = schema["resource_schemas"]
        self.data_sources = schema["data_source_schemas"]
        self._response: pb.GetProviderSchema.Response | None = None

    def GetMetadata(self, request: Any, context: Any) -> Any:
        return pb.GetMetadata.Response(
            server_capabilities=pb.ServerCapabilities(plan_destroy=True),
            resources=[pb.GetMetadata.ResourceMetadata(type_name=n) for n in self.resources],
            data_sources=[
                pb.GetMetadata.DataSourceMetadata(type_name=n) for n in self.data_sources
            ],
        )

    def GetProviderSchema(self, request: Any, context: Any) -> Any:
        if self._response is None:
            self._response = pb.GetProviderSchema.Response(
                provider=pb.Schema(version=0, block=block_pb(self.schema["provider"]["block"])),
                provider_meta=pb.Schema(version=0, block=pb.Schema.Block()),
                resource_schemas={
                    name: pb.Schema(version=0, block=block_pb(spec["block"]))
                    for name, spec in self.resources.items()
                },
                data_source_schemas={
                    name: pb.Schema(version=0, block=block_pb(spec["block"]))
                    for name, spec in self.data_sources.items()
                },
                server_capabilities=pb.ServerCapabilities(plan_destroy=True),
            )
        return self._response

    def ValidateProviderConfig(self, request: Any, context: Any) -> Any:
        return pb.ValidateProviderConfig.Response()

    def ValidateResourceConfig(self, request: Any, context: Any) -> Any:
        return pb.ValidateResourceConfig.Response()

    def ValidateDataResourceConfig(self, request: Any, context: Any) -> Any:
        return pb.ValidateDataResourceConfig.Response()

    def ConfigureProvider(self, request: Any, context: Any) -> Any:
        return pb.ConfigureProvider.Response()

    def UpgradeResourceState(self, request: Any, context: Any) -> Any:
        state = json.loads(request.raw_state.json) if request.raw_state.json else None
        return pb.UpgradeResourceState.Response(upgraded_state=_encode(state))

    def ReadResource(self, request: Any, context: Any) -> Any:
        return pb.ReadResource.Response(new_state=request.current_state, private=request.private)

    def PlanResourceChange(self, request: Any, context: Any) -> Any:
        proposed = _decode(request.proposed_new_state)
        prior = _decode(request.prior_state)
        if proposed is None or prior is not None:
            # Destroy, or an update of something this provider never created: plan as proposed.
            return pb.PlanResourceChange.Response(planned_state=request.proposed_new_state)
        block = self.resources[request.type_name]["block"]
        planned = _fill_computed(proposed, block, lambda _type: _UNKNOWN)
        return pb.PlanResourceChange.Response(planned_state=_encode(planned))

    def ApplyResourceChange(self, request: Any, context: Any) -> Any:
        return pb.ApplyResourceChange.Response(
            diagnostics=[
                pb.Diagnostic(
                    severity=pb.Diagnostic.ERROR,
                    summary="tfcheck stand-in provider cannot apply",
                    detail="It serves the google provider's schema for offline checks only.",
                )
            ]
        )

    def ReadDataSource(self, request: Any, context: Any) -> Any:
        config = _decode(request.config)
        block = self.data_sources[request.type_name]["block"]
        state = _fill_computed(config, block, _placeholder)
        return pb.ReadDataSource.Response(state=_encode(state))

    def GetFunctions(self, request: Any, context: Any) -> Any:
        return pb.GetFunctions.Response()

    def StopProvider(self, request: Any, context: Any) -> Any:
        return pb.StopProvider.Response()


def self_signed_certificate() -> tuple[bytes, grpc.ServerCredentials]:
    """A throwaway TLS identity for this process (DER for the handshake, gRPC credentials).

    terraform trusts the certificate the handshake line carries (go-plugin's AutoMTLS), so it
    is its own CA, valid for localhost, and lives only as long as the process.
    """
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    credentials = grpc.ssl_server_credentials([(key_pem, certificate_pem)])
    return certificate.public_bytes(serialization.Encoding.DER), credentials


def serve(schema_path: Path) -> None:
    """Start the gRPC server and print go-plugin's handshake line for terraform."""
    types = os.environ.get(TYPES_ENV)
    only = {name.strip() for name in types.split(",") if name.strip()} if types else None
    provider = StandInProvider(load_schema(schema_path, only))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc.add_ProviderServicer_to_server(provider, server)
    stopped = []

    class Controller(controller_rpc.GRPCControllerServicer):
        def Shutdown(self, request: Any, context: Any) -> Any:
            stopped.append(True)
            return controller_pb.Empty()

    class Stdio(stdio_rpc.GRPCStdioServicer):
        def StreamStdio(self, request: Any, context: Any) -> Any:
            return iter([])

    controller_rpc.add_GRPCControllerServicer_to_server(Controller(), server)
    stdio_rpc.add_GRPCStdioServicer_to_server(Stdio(), server)
    with tempfile.TemporaryDirectory(prefix="tfcheck-provider-") as directory:
        socket = f"{directory}/plugin.sock"
        certificate, credentials = self_signed_certificate()
        server.add_secure_port(f"unix://{socket}", credentials)
        server.start()
        # core-protocol | app-protocol | network | address | protocol | server certificate
        handshake = ["1", "6", "unix", socket, "grpc"]
        handshake.append(base64.b64encode(certificate).decode().rstrip("="))
        print("|".join(handshake), flush=True)
        # wait_for_termination(timeout) is True while the server still runs.
        while not stopped and server.wait_for_termination(0.05):
            pass
        server.stop(grace=0)
    # Leave at once: terraform waits for the process to exit, and joining gRPC's idle worker
    # threads at interpreter exit costs it seconds per provider start.
    sys.stdout.flush()
    os._exit(0)


def main(argv: list[str]) -> int:
    schema_path = Path(os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA)
    if "--print-schema-stats" in argv:
        schema = load_schema(schema_path)
        print(
            f"{schema_path}: {len(schema['resource_schemas'])} resources, "
            f"{len(schema['data_source_schemas'])} data sources"
        )
        return 0
    if not os.environ.get("PLUGIN_PROTOCOL_VERSIONS"):
        print(
            "This is a terraform plugin: terraform starts it (see tools/tfcheck).", file=sys.stderr
        )
        return 1
    serve(schema_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
