"""Check terraform/ offline, as hard as a machine without the Terraform registry allows.

    build/tfcheck/venv/bin/python tools/tfcheck/tfcheck.py            # what `make tf-check` runs
    build/tfcheck/venv/bin/python tools/tfcheck/tfcheck.py --dir DIR  # another copy (the tests)

Steps, in order (a step that needs an earlier one is skipped when that one failed):

1. fmt       `terraform fmt -check -recursive`.
2. init      `terraform init` in a scratch copy, the google provider replaced by a stand-in
             that serves the real provider's schema (standin_provider.py, the schema in
             google-provider-schema.json.gz, extracted by extract_schema.py).
3. validate  `terraform validate`: every argument, block, type and reference checked
             against that schema (a misspelt argument, a block written as an argument,
             a missing required argument, a reference to an attribute that does not exist).
4. test      `terraform test`: terraform/tests/*.tftest.hcl, design assertions run against
             `mock_provider "google"` (GPU, dead-lettering, no allUsers, one account per
             function, least-privilege roles, variable validation).
5. plan      `terraform plan` with terraform.tfvars.example, then `terraform show -json`.
6. checkov   checkov on the plan (every variable and for_each resolved), with the custom
             policies in policies/ and the skips in checkov-skips.yaml (each with a reason).

Exit status 0 when every step passed; the failing steps are named at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCHEMA = HERE / "google-provider-schema.json.gz"
POLICIES = HERE / "policies"
SKIPS = HERE / "checkov-skips.yaml"
PROVIDER_VERSION = "8.7.0"  # the version the committed schema was extracted from
# What the scratch copy takes from terraform/: configuration, tests, the example variables.
COPIED_SUFFIXES = (".tf", ".tftest.hcl", ".tfvars.example", ".tfmock.hcl")
# Values the checks plan with, on top of terraform.tfvars.example.
CHECK_VARIABLES_FILE = "tfcheck.auto.tfvars.json"


class Step:
    def __init__(self, name: str) -> None:
        self.name = name
        self.ok: bool | None = None
        self.seconds = 0.0


def run(
    command: Sequence[str], cwd: Path, env: dict[str, str], *, capture: bool = False
) -> subprocess.CompletedProcess[str]:
    print(f"$ {' '.join(command)}", flush=True)
    result = subprocess.run(
        list(command), cwd=cwd, env=env, text=True, capture_output=capture, check=False
    )
    return result


def terraform_env(workdir: Path) -> dict[str, str]:
    """Environment for terraform: our CLI config (the stand-in mirror), no prompts, no colour."""
    env = dict(os.environ)
    env.update(
        TF_CLI_CONFIG_FILE=str(workdir / "terraformrc"),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
        TFCHECK_PROVIDER_SCHEMA=str(SCHEMA),
    )
    env.pop("TF_PLUGIN_CACHE_DIR", None)
    env.pop("TF_DATA_DIR", None)
    return env


def install_standin_provider(workdir: Path) -> None:
    """A filesystem mirror holding the stand-in as hashicorp/google, and a CLI config using it."""
    mirror = workdir / "mirror"
    target = mirror / "registry.terraform.io/hashicorp/google" / PROVIDER_VERSION / "linux_amd64"
    target.mkdir(parents=True)
    executable = target / f"terraform-provider-google_v{PROVIDER_VERSION}"
    executable.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" "{HERE / "standin_provider.py"}" "$@"\n',
        encoding="utf-8",
    )
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (workdir / "terraformrc").write_text(
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f'    path    = "{mirror}"\n'
        '    include = ["registry.terraform.io/hashicorp/google"]\n'
        "  }\n"
        "}\n",
        encoding="utf-8",
    )


def copy_configuration(source: Path, destination: Path) -> None:
    """The .tf files and tests, never state, lock files, .terraform or a real terraform.tfvars."""
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.name.endswith(COPIED_SUFFIXES):
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


_TYPE_USE = re.compile(
    r'^\s*(?:resource|data|mock_resource|mock_data|override_resource|override_data)\s+"(google_\w+)"',
    re.M,
)


def used_types(configuration: Path) -> list[str]:
    """The google_* resource and data source types the configuration and its tests declare."""
    found: set[str] = set()
    for path in configuration.rglob("*"):
        if path.is_file() and path.name.endswith((".tf", ".tftest.hcl", ".tfmock.hcl")):
            found.update(_TYPE_USE.findall(path.read_text(encoding="utf-8")))
    return sorted(found)


def function_names(configuration: Path) -> list[str]:
    """Keys of `local.functions`: one placeholder source zip each for plan and tests."""
    import hcl2  # bc-python-hcl2, installed with checkov

    names: list[str] = []
    for path in sorted(configuration.glob("*.tf")):
        try:
            with path.open(encoding="utf-8") as handle:
                document = hcl2.load(handle)
        except Exception as error:  # validate reports syntax errors, with their context
            print(f"tfcheck: could not parse {path.name} ({error}); validate will say more")
            continue
        for block in document.get("locals", []):
            functions = block.get("functions")
            if isinstance(functions, list) and functions and isinstance(functions[0], dict):
                functions = functions[0]
            if isinstance(functions, dict):
                names.extend(functions)
    return names


def write_placeholder_sources(directory: Path, names: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        with zipfile.ZipFile(directory / f"{name}.zip", "w") as archive:
            archive.writestr("main.py", f"# placeholder source of {name} for offline checks\n")


def load_skips() -> dict[str, str]:
    """checkov-skips.yaml: check id -> reason. A skip without a reason is an error."""
    skips: dict[str, str] = {}
    current: str | None = None
    for number, raw in enumerate(SKIPS.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" ") and line.endswith(":"):
            current = line[:-1].strip()
            skips[current] = ""
        elif current and line.strip().startswith("reason:"):
            skips[current] = line.split("reason:", 1)[1].strip().strip("\"'")
        else:
            raise SystemExit(f"{SKIPS}:{number}: expected '<CHECK_ID>:' or '  reason: ...'")
    missing = [check for check, reason in skips.items() if len(reason) < 20]
    if missing:
        raise SystemExit(f"{SKIPS}: every skipped check needs a written reason: {missing}")
    return skips


_INLINE_SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def inline_skips(configuration: Path) -> list[tuple[str, str, str]]:
    """(file:line, check, reason) of each `# checkov:skip=` comment; refuses one with no reason."""
    found = []
    for path in sorted(configuration.rglob("*.tf")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            match = _INLINE_SKIP.search(line)
            if not match:
                continue
            where = f"{path.relative_to(configuration)}:{number}"
            reason = (match[2] or "").strip()
            if len(reason) < 20:
                raise SystemExit(f"{where}: checkov:skip={match[1]} needs a written reason")
            found.append((where, match[1], reason))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=REPO / "terraform", help="configuration")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["test", "plan", "checkov"],
        help="leave out a step (for quick local runs; make tf-check runs them all)",
    )
    args = parser.parse_args(argv)
    configuration = args.dir.resolve()
    terraform = shutil.which("terraform")
    if terraform is None:
        print(
            "tfcheck: terraform is not on PATH (1.11 is what versions.tf asks for)", file=sys.stderr
        )
        return 2

    steps: list[Step] = []

    def step(name: str) -> Step:
        if steps:
            steps[-1].seconds = time.monotonic() - steps[-1].seconds
        current = Step(name)
        current.seconds = time.monotonic()
        steps.append(current)
        print(f"\n== {name}", flush=True)
        return current

    workdir = Path(tempfile.mkdtemp(prefix="tfcheck-"))
    copy = workdir / "terraform"
    copy.mkdir()
    try:
        env = terraform_env(workdir)
        started = time.monotonic()

        install_standin_provider(workdir)
        fmt = step("fmt")
        result = run(
            [terraform, "fmt", "-check", "-recursive", "-diff", str(configuration)],
            configuration,
            env,
        )
        fmt.ok = result.returncode == 0
        if not fmt.ok:
            print(
                "tfcheck: files above are not formatted: run `terraform fmt -recursive terraform`"
            )

        init = step("init")
        copy_configuration(configuration, copy)
        sources = workdir / "function-sources"
        write_placeholder_sources(sources, function_names(copy))
        # Serve only the types in use: terraform decodes the schema at every provider start.
        env["TFCHECK_PROVIDER_TYPES"] = ",".join(used_types(copy))
        (copy / CHECK_VARIABLES_FILE).write_text(
            json.dumps({"function_source_dir": str(sources)}), encoding="utf-8"
        )
        result = run(
            [terraform, "init", "-backend=false", "-input=false", "-no-color"],
            copy,
            env,
            capture=True,
        )
        init.ok = result.returncode == 0
        if not init.ok:
            print(result.stdout + result.stderr)

        validate = step("validate")
        if init.ok:
            result = run([terraform, "validate", "-no-color"], copy, env)
            validate.ok = result.returncode == 0

        if "test" not in args.skip:
            test = step("test")
            if validate.ok:
                result = run([terraform, "test", "-no-color"], copy, env)
                test.ok = result.returncode == 0

        plan_json = workdir / "plan.json"
        if "plan" not in args.skip:
            plan = step("plan")
            if validate.ok:
                example = copy / "terraform.tfvars.example"
                var_file = ["-var-file", example.name] if example.exists() else []
                result = run(
                    [
                        terraform,
                        "plan",
                        "-input=false",
                        "-no-color",
                        "-lock=false",
                        "-refresh=false",
                        *var_file,
                        "-out",
                        "plan.bin",
                    ],
                    copy,
                    env,
                    capture=True,
                )
                plan.ok = result.returncode == 0
                if plan.ok:
                    summary = [
                        line for line in result.stdout.splitlines() if line.startswith("Plan:")
                    ]
                    print("\n".join(summary))
                    shown = run([terraform, "show", "-json", "plan.bin"], copy, env, capture=True)
                    plan.ok = shown.returncode == 0
                    plan_json.write_text(shown.stdout, encoding="utf-8")
                else:
                    print(result.stdout + result.stderr)

            if "checkov" not in args.skip:
                checkov = step("checkov")
                if plan.ok:
                    skips = load_skips()
                    for check, reason in skips.items():
                        print(f"skipping {check} everywhere: {reason}")
                    for where, check, reason in inline_skips(copy):
                        print(f"skipping {check} at {where}: {reason}")
                    command = [
                        str(Path(sys.executable).with_name("checkov")),
                        "--file",
                        str(plan_json),
                        "--framework",
                        "terraform_plan",
                        "--external-checks-dir",
                        str(POLICIES),
                        # Reads the `# checkov:skip=` comments of the .tf files the plan came from.
                        "--repo-root-for-plan-enrichment",
                        str(copy),
                        "--skip-download",
                        "--compact",
                        "--quiet",
                        "--output",
                        "cli",
                    ]
                    if skips:
                        command += ["--skip-check", ",".join(skips)]
                    result = run(command, copy, env)
                    checkov.ok = result.returncode == 0

        steps[-1].seconds = time.monotonic() - steps[-1].seconds
        print(f"\n== tfcheck summary ({time.monotonic() - started:.0f}s)")
        for current in steps:
            state = {True: "ok", False: "FAILED", None: "skipped (an earlier step failed)"}[
                current.ok
            ]
            print(f"  {current.name:9} {state:8} {current.seconds:5.1f}s")
        failed = [current.name for current in steps if current.ok is False]
        blocked = [current.name for current in steps if current.ok is None]
        if failed or blocked:
            print(f"tfcheck: FAILED: {', '.join(failed)}", file=sys.stderr)
            return 1
        return 0
    finally:
        if args.keep:
            print(f"scratch directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
