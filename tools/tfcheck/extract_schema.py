"""Extract the google provider's schema from the jsii metadata of a CDK provider package.

The Terraform registry is out of reach offline, so the provider binary (and with it
`terraform providers schema -json`) is not available. The prebuilt CDK bindings on PyPI
(`cdktn-provider-google`) and npm (`@cdktn/provider-google`, `@cdktf/provider-google`) are
generated from that very schema and carry it in their `.jsii` assembly: every argument with
its type and whether it is required, every nested block, and the computed attributes as
getters. This script turns that assembly into the JSON document `terraform providers schema
-json` prints (descriptions dropped), which `standin_provider.py` serves to terraform.

    python tools/tfcheck/extract_schema.py --wheel cdktn_provider_google-21.1.0-py3-none-any.whl \
        --out tools/tfcheck/google-provider-schema.json.gz

What the assembly cannot say, and the choice made here (each one errs on the lenient side,
so a valid configuration is never rejected):
- list or set: every multi-valued argument and block is declared a list;
- a one-item block is declared a list with max_items 1 (how SDKv2 resources, nearly all of
  this provider, declare them: `block[0].attribute` in references);
- optional or optional+computed: every optional argument is declared optional+computed.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

PROVIDER_SOURCE = "registry.terraform.io/hashicorp/google"
_REPRESENTS = re.compile(
    r"Represents a \{@link https://registry\.terraform\.io/providers/hashicorp/google/"
    r"(?P<version>[\d.]+)/docs(?:/(?P<kind>resources|data-sources)/(?P<name>\w+))? "
)
_ANCHOR = re.compile(r"\{@link https://registry\.terraform\.io/\S+#(?P<name>\w+) ")
# Arguments every resource config inherits from cdktn.TerraformMetaArguments.
_META = {"connection", "count", "dependsOn", "forEach", "lifecycle", "provider", "provisioners"}
# How many times a recursive block type is unrolled inside itself.
_RECURSION_DEPTH = 3
_MAPS = {
    "cdktn.StringMap": ["map", "string"],
    "cdktn.NumberMap": ["map", "number"],
    "cdktn.BooleanMap": ["map", "bool"],
    "cdktn.AnyMap": ["map", "dynamic"],
    "cdktn.StringMapList": ["list", ["map", "string"]],
    "cdktn.NumberMapList": ["list", ["map", "number"]],
    "cdktn.BooleanMapList": ["list", ["map", "bool"]],
    "cdktn.AnyMapList": ["list", ["map", "dynamic"]],
}


def snake(camel: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower()


class Assembly:
    def __init__(self, types: dict[str, Any]) -> None:
        self.types = types
        self.recursive: set[str] = set()

    def struct(self, type_ref: dict[str, Any]) -> tuple[str, bool] | None:
        """(struct fqn, is_list) when the type is a nested block, else None."""
        if "fqn" in type_ref:
            found = self.types.get(type_ref["fqn"])
            if found and found["kind"] == "interface" and found.get("datatype"):
                return type_ref["fqn"], False
            return None
        if "union" in type_ref:
            for member in type_ref["union"]["types"]:
                inner = self.struct(member)
                if inner:
                    return inner
            return None
        if "collection" in type_ref and type_ref["collection"]["kind"] == "array":
            inner = self.struct(type_ref["collection"]["elementtype"])
            return (inner[0], True) if inner else None
        return None

    def value_type(self, type_ref: dict[str, Any]) -> Any:
        """The cty type (as terraform's JSON schema writes it) of a non-block value."""
        if "primitive" in type_ref:
            return {"string": "string", "number": "number", "boolean": "bool"}.get(
                type_ref["primitive"], "dynamic"
            )
        if "union" in type_ref:
            members = [m for m in type_ref["union"]["types"] if m.get("fqn") != "cdktn.IResolvable"]
            if not members:
                return "bool"  # cdktn types computed booleans as bare IResolvable
            return self.value_type(members[0])
        if "collection" in type_ref:
            collection = type_ref["collection"]
            kind = "map" if collection["kind"] == "map" else "list"
            return [kind, self.value_type(collection["elementtype"])]
        fqn = type_ref["fqn"]
        if fqn == "cdktn.IResolvable":
            return "bool"
        if fqn in _MAPS:
            return _MAPS[fqn]
        found = self.types.get(fqn)
        if found is not None and found["kind"] == "class":
            reference = fqn[: -len("List")] + "OutputReference" if fqn.endswith("List") else fqn
            if reference in self.types:
                return ["list", ["object", self.computed_object(reference)]]
        return "dynamic"

    def computed_object(self, reference_fqn: str) -> dict[str, Any]:
        """Attribute types of a computed-only nested object, from its OutputReference getters."""
        attributes = {}
        for prop in self.types[reference_fqn].get("properties", []):
            name = prop["name"]
            if prop.get("static") or name.endswith("Input") or name == "internalValue":
                continue
            attributes[snake(name)] = self.value_type(prop["type"])
        return attributes

    def block(
        self, struct_fqn: str, getters_fqn: str | None, path: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """The schema block of a config struct, plus the computed getters of its class."""
        if path.count(struct_fqn) >= _RECURSION_DEPTH:
            # A recursive type: unrolled a few levels, then an empty block.
            self.recursive.add(path[0].rsplit(".", 2)[-2])
            return {"attributes": {}}
        path = (*path, struct_fqn)
        struct = self.types[struct_fqn]
        attributes: dict[str, Any] = {}
        block_types: dict[str, Any] = {}
        configured = set()
        top_level = "cdktn.TerraformMetaArguments" in struct.get("interfaces", [])
        for prop in struct.get("properties", []):
            if top_level and prop["name"] in _META:
                continue
            configured.add(prop["name"])
            docs = prop.get("docs", {})
            anchor = _ANCHOR.search(docs.get("remarks", "") + " " + docs.get("summary", ""))
            name = anchor["name"] if anchor else snake(prop["name"])
            nested = self.struct(prop["type"])
            if nested is not None:
                nested_fqn, is_list = nested
                reference = nested_fqn + "OutputReference"
                entry: dict[str, Any] = {
                    "nesting_mode": "list",
                    "block": self.block(
                        nested_fqn, reference if reference in self.types else None, path
                    ),
                }
                if name == "timeouts":
                    entry["nesting_mode"] = "single"
                elif not is_list:
                    entry["max_items"] = 1
                if not prop.get("optional"):
                    entry["min_items"] = 1
                block_types[name] = entry
                continue
            attribute: dict[str, Any] = {"type": self.value_type(prop["type"])}
            if prop.get("optional"):
                attribute.update(optional=True, computed=True)
            else:
                attribute["required"] = True
            attributes[name] = attribute
        if getters_fqn is not None:
            for prop in self.types[getters_fqn].get("properties", []):
                name = prop["name"]
                if (
                    prop.get("static")
                    or name in configured
                    or name.endswith("Input")
                    or name in {"internalValue", "tfResourceType", "fqn", "friendlyUniqueId"}
                    or prop.get("protected")
                ):
                    continue
                attributes.setdefault(
                    snake(name), {"type": self.value_type(prop["type"]), "computed": True}
                )
        if top_level:
            attributes.setdefault("id", {"type": "string", "optional": True, "computed": True})
        result: dict[str, Any] = {"attributes": dict(sorted(attributes.items()))}
        if block_types:
            result["block_types"] = dict(sorted(block_types.items()))
        return result


def read_assembly(path: Path) -> dict[str, Any]:
    """The .jsii document from a wheel, an npm tarball, or a bare .jsii file."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            inner = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
            return read_assembly_tgz(wheel.read(inner))
    if path.suffix == ".tgz":
        return read_assembly_tgz(path.read_bytes())
    return json.loads(path.read_text(encoding="utf-8"))


def read_assembly_tgz(data: bytes) -> dict[str, Any]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        member = next(m for m in archive.getmembers() if m.name.endswith("/.jsii"))
        handle = archive.extractfile(member)
        assert handle is not None
        return json.load(handle)


def extract(assembly: dict[str, Any], source_package: str) -> dict[str, Any]:
    """The provider schema in `terraform providers schema -json` form."""
    types = assembly["types"]
    model = Assembly(types)
    resources: dict[str, Any] = {}
    data_sources: dict[str, Any] = {}
    provider: dict[str, Any] | None = None
    version = None
    for fqn, entry in types.items():
        if entry["kind"] != "class":
            continue
        match = _REPRESENTS.match(entry.get("docs", {}).get("summary", ""))
        if not match:
            continue
        version = match["version"]
        config = entry["initializer"]["parameters"][-1]["type"]["fqn"]
        if match["kind"] is None:
            provider = {"version": 0, "block": model.block(config, None)}
            # `alias` is a meta-argument of every provider block, not part of its schema.
            provider["block"]["attributes"].pop("alias", None)
            continue
        schema = {"version": 0, "block": model.block(config, fqn)}
        (resources if match["kind"] == "resources" else data_sources)[f"google_{match['name']}"] = (
            schema
        )
    if model.recursive:
        print(
            f"recursive block types unrolled {_RECURSION_DEPTH} levels in: "
            + ", ".join(sorted(model.recursive)),
            file=sys.stderr,
        )
    if provider is None or version is None:
        raise SystemExit("no google provider classes found in the assembly")
    return {
        "format_version": "1.0",
        "generated_from": {
            "package": source_package,
            "provider": f"hashicorp/google {version}",
            "generator": "tools/tfcheck/extract_schema.py",
        },
        "provider_schemas": {
            PROVIDER_SOURCE: {
                "provider": provider,
                "resource_schemas": dict(sorted(resources.items())),
                "data_source_schemas": dict(sorted(data_sources.items())),
            }
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wheel", type=Path, help="cdktn-provider-google wheel")
    source.add_argument("--npm-tarball", type=Path, help="@cdktn/provider-google npm tarball")
    parser.add_argument("--package", help="package@version recorded in the output")
    parser.add_argument("--out", type=Path, required=True, help="*.json or *.json.gz")
    args = parser.parse_args(argv)
    path = args.wheel or args.npm_tarball
    schema = extract(read_assembly(path), args.package or path.name)
    text = json.dumps(schema, separators=(",", ":"), sort_keys=False) + "\n"
    if args.out.suffix == ".gz":
        # mtime=0 and no file name: the same schema always gives the same bytes.
        with (
            args.out.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as handle,
        ):
            handle.write(text.encode("utf-8"))
    else:
        args.out.write_text(text, encoding="utf-8")
    provider = schema["provider_schemas"][PROVIDER_SOURCE]
    print(
        f"{args.out}: {schema['generated_from']['provider']}, "
        f"{len(provider['resource_schemas'])} resources, "
        f"{len(provider['data_source_schemas'])} data sources",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
