"""Which marked adapter operations (tuning/gcp/permissions.py) each deployable can reach.

A static, deliberately generous walk over the source, so that a call nobody granted
cannot hide: starting from a deployable's entry module (every function and module-level
statement of functions/<name>/main.py, or trainer/main.py), it follows

- names and `module.name` references to project functions and classes (a reference
  counts as a call: callbacks, `functools.partial` and route tables are followed);
- calls `<...>.<adapter>.<method>(...)` and `<adapter>.<method>(...)`, where `<adapter>` is
  one of `Services`' attributes (`jobs`, `storage`, ...) or a variable named like it: the
  marked `<method>` of each production class of that attribute is an operation the
  deployable uses (a launcher is Cloud Run's or Vertex AI's, as a job's tier decides, so a
  deployable that launches needs what either class's method needs);
- any other `x.method(...)` to every project method of that name among the modules the
  deployable imports (types are not inferred, so this over-approximates).

Limits: an adapter held under another name (`store = services.storage`) is not seen;
`getattr` and other dynamic calls are not followed. The walk over-approximates through
same-named methods, which can only demand a grant, never hide one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tuning.gcp.firestore import JobStore
from tuning.gcp.permissions import Needed, operations_of
from tuning.gcp.pubsub import Publisher
from tuning.gcp.secrets import SecretManagerStore
from tuning.gcp.storage import GcsStore
from tuning.gcp.throughput import ThroughputStore
from tuning.launchers.cloud_run import CloudRunLauncher
from tuning.launchers.vertex import VertexLauncher

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("tuning", "trainer", "functions")
# What each `Services` attribute can be in production (tuning/services.py,
# launchers/factory.py: a tier's engine picks its launcher, and one deployment may have both).
PRODUCTION_ADAPTERS: dict[str, tuple[type, ...]] = {
    "jobs": (JobStore,),
    "publisher": (Publisher,),
    "storage": (GcsStore,),
    "secrets": (SecretManagerStore,),
    "launcher": (CloudRunLauncher, VertexLauncher),
    "throughput": (ThroughputStore,),
}
ADAPTER_MODULES = {
    adapter.__module__ for adapters in PRODUCTION_ADAPTERS.values() for adapter in adapters
}


def adapter_operations(key: str) -> dict[str, tuple[Needed, ...]]:
    """Method name -> what it needs in each production class of the attribute `key` that
    marks it (one entry per class)."""
    found: dict[str, list[Needed]] = {}
    for adapter in PRODUCTION_ADAPTERS[key]:
        for method, needed in operations_of(adapter).items():
            found.setdefault(method, []).append(needed)
    return {method: tuple(needs) for method, needs in found.items()}


@dataclass(frozen=True)
class Use:
    """One adapter operation a deployable reaches, and where it is called from."""

    adapter: str  # the Services attribute
    method: str
    needed: Needed
    caller: str  # module:function


@dataclass
class Module:
    name: str
    tree: ast.Module
    imports: dict[str, str] = field(default_factory=dict)  # local name -> module[:attribute]
    definitions: dict[str, ast.AST] = field(default_factory=dict)  # "f" / "Class.m" -> node
    classes: dict[str, list[str]] = field(default_factory=dict)  # Class -> its method names


def module_path(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


@cache
def load(name: str) -> Module:
    path = module_path(name)
    assert path is not None, name
    module = Module(name, ast.parse(path.read_text(encoding="utf-8")))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # annotations only: never imported at run time
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module.imports[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                module.imports[alias.asname or alias.name] = (
                    target if module_path(target) else f"{base}:{alias.name}"
                )
    for node in module.tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            module.definitions[node.name] = node
        elif isinstance(node, ast.ClassDef):
            methods = [
                item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            ]
            module.classes[node.name] = methods
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    module.definitions[f"{node.name}.{item.name}"] = item
    return module


def is_project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES and module_path(name) is not None


def imported_modules(root: str) -> set[str]:
    """The project modules a deployable can import, function-level imports included."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [
            ".".join(parts[:i]) for i in range(1, len(parts)) if is_project(".".join(parts[:i]))
        ]
        for target in load(name).imports.values():
            module = target.split(":")[0]
            if is_project(module):
                todo.append(module)
    return seen


def terminal_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call) and terminal_name(node.func) == "launcher_for":
        return "launcher"  # services.launcher_for(job): the launcher of the job's tier
    return None


class Walk:
    def __init__(self, root: str) -> None:
        self.modules = imported_modules(root)
        self.operations = {key: adapter_operations(key) for key in PRODUCTION_ADAPTERS}
        self.methods: dict[str, list[tuple[str, str]]] = {}  # name -> [(module, Class.m)]
        for name in self.modules:
            if name in ADAPTER_MODULES:
                continue  # their marked methods declare everything their Google calls need
            for cls, methods in load(name).classes.items():
                for method in methods:
                    self.methods.setdefault(method, []).append((name, f"{cls}.{method}"))
        self.reached: set[tuple[str, str]] = set()
        self.uses: set[Use] = set()
        self.todo: list[tuple[str, str]] = []
        entry = load(root)
        self.visit_module_level(root)
        for key in entry.definitions:
            self.reach(root, key)
        self.run()

    def reach(self, module: str, key: str) -> None:
        if (module, key) not in self.reached and module not in ADAPTER_MODULES:
            self.reached.add((module, key))
            self.todo.append((module, key))

    def visit_module_level(self, module: str) -> None:
        if (module, "<module>") in self.reached:
            return
        self.reached.add((module, "<module>"))
        for node in load(module).tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.scan(module, "<module>", node)

    def run(self) -> None:
        while self.todo:
            module, key = self.todo.pop()
            self.visit_module_level(module)
            self.scan(module, key, load(module).definitions[key])

    def resolve(self, module: str, target: str) -> None:
        """Reach what `target` (module[:attribute] or module.attribute) names."""
        name, _, attribute = target.partition(":")
        if not is_project(name):
            return
        if attribute:
            self.reach_definition(name, attribute)

    def reach_definition(self, module: str, name: str) -> None:
        found = load(module)
        if name in found.definitions:
            self.reach(module, name)
        elif name in found.classes:
            for method in found.classes[name]:
                if method.startswith("__"):
                    self.reach(module, f"{name}.{method}")
        elif name in found.imports:  # re-exported
            self.resolve(module, found.imports[name])

    def scan(self, module: str, key: str, tree: ast.AST) -> None:
        here = load(module)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                if node.id in here.definitions or node.id in here.classes:
                    self.reach_definition(module, node.id)
                elif node.id in here.imports:
                    self.resolve(module, here.imports[node.id])
            elif isinstance(node, ast.Attribute):
                self.attribute(module, key, node)

    def attribute(self, module: str, key: str, node: ast.Attribute) -> None:
        here = load(module)
        base = node.value
        if isinstance(base, ast.Name) and base.id in here.imports:
            imported = here.imports[base.id]
            if ":" not in imported and is_project(imported):
                self.reach_definition(imported, node.attr)
                return
        receiver = terminal_name(base)
        if receiver in self.operations:
            needs = self.operations[receiver].get(node.attr, ())
            for needed in needs:
                self.uses.add(Use(receiver, node.attr, needed, f"{module}:{key}"))
            if needs:
                return
        for owner, method in self.methods.get(node.attr, []):
            self.reach(owner, method)


def uses_of(root: str) -> set[Use]:
    """Every marked adapter operation the deployable whose entry module is `root` reaches."""
    return Walk(root).uses


def every_adapter_call_site() -> Iterator[tuple[str, str, str]]:
    """(module, adapter, method) for each `<adapter>.<marked method>` anywhere in the project."""
    operations = {key: adapter_operations(key) for key in PRODUCTION_ADAPTERS}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if name in ADAPTER_MODULES:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute):
                    receiver = terminal_name(node.value)
                    if receiver in operations and node.attr in operations[receiver]:
                        yield name, receiver, node.attr
