"""The trainer image's pins agree with pyproject.toml, and its base image with the torch pin."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "trainer" / "requirements.txt"
DOCKERFILE = ROOT / "trainer" / "Dockerfile"


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{line}: pin one exact version"
            found[canonicalize_name(requirement.name)] = specifier.version
    return found


def trainer_requirements() -> list[Requirement]:
    """The trainer extra, with the extras it includes of this project expanded, and the core."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    pending = [Requirement(r) for r in extras["trainer"]]
    while pending:
        requirement = pending.pop()
        if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
            pending += [Requirement(r) for extra in requirement.extras for r in extras[extra]]
        else:
            requirements.append(requirement)
    return requirements


def test_every_trainer_requirement_is_pinned_within_its_range() -> None:
    pinned = pins()
    required = trainer_requirements()

    for requirement in required:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not pinned in {REQUIREMENTS.name}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} does not satisfy pyproject.toml's {requirement}"
        )
    assert set(pinned) == {canonicalize_name(r.name) for r in required}, "unlisted extras"


def test_the_base_image_carries_the_pinned_torch() -> None:
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)

    assert base is not None
    image, _, tag = base[1].partition(":")
    assert image == "pytorch/pytorch"
    assert tag.startswith(f"{pins()['torch']}-cuda") and tag.endswith("-runtime")


def test_the_image_runs_the_trainer_as_a_non_root_user_without_secrets() -> None:
    text = DOCKERFILE.read_text()
    runtime = text[text.rindex("\nFROM ") :]  # the final stage

    assert 'ENTRYPOINT ["python", "-m", "trainer"]' in runtime
    user = re.findall(r"^USER (\S+)$", runtime, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    assert not re.search(r"\b\w*(TOKEN|API_KEY|SECRET|PASSWORD)=", runtime), "a secret baked in"
    assert "LLAMA_CPP_DIR=" in runtime and "LLAMA_QUANTIZE=" in runtime


def test_flash_attention_is_built_against_the_runtime_s_torch_and_cuda() -> None:
    # A flash-attn wheel only loads with the torch and CUDA it was compiled against.
    text = DOCKERFILE.read_text()
    runtime = re.search(r"^ARG BASE_IMAGE=(\S+)-runtime$", text, re.MULTILINE)
    devel = re.search(r"^ARG DEVEL_IMAGE=(\S+)-devel$", text, re.MULTILINE)

    assert runtime is not None and devel is not None
    assert devel[1] == runtime[1]
    assert re.search(r"^ARG FLASH_ATTN_VERSION=\d", text, re.MULTILINE), "pin its version"
    final = text[text.rindex("\nFROM ") :]
    assert "COPY --from=flash-attn" in final and "--no-deps" in final  # keeps the image's torch
