"""The package's shape, enforced: imports flow one way, no cycles, no oversized modules.

Layers, lowest first; a module may import its own layer and those below, never above. Within a
layer, any imports are allowed as long as no cycle forms. Every import counts, also inside a
function or under ``TYPE_CHECKING``: a type-only import upward is still a dependency upward,
and a cycle that only type checkers see still tangles the design.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "prelabel"
MAX_LINES = 400

#: Each module prefix's layer; the longest matching prefix wins.
LAYERS: dict[str, int] = {
    # Leaves: the package's own __init__ (only this module: not a prefix), errors, settings,
    # progress reporting.
    "prelabel": 0,
    "prelabel.__main__": 8,
    "prelabel.errors": 0,
    "prelabel.config": 0,
    "prelabel.progress": 0,
    "prelabel.retries": 0,
    # The values every stage passes on: categories, images, predictions.
    "prelabel.taxonomy": 1,
    "prelabel.images": 1,
    "prelabel.panoptic": 1,
    # Models (no I/O) and file formats (no models): the model back-ends behind one seam
    # (backends: registry, contract, shared loading; one package per back-end), the generic
    # pipeline over them (candidates -> panoptic map, box rules, sequences), the weight tools.
    "prelabel.backends": 2,
    "prelabel.pipeline": 2,
    "prelabel.weights": 2,
    "prelabel.formats": 2,
    # Where data lives: image buckets, the Segments API, the state file.
    "prelabel.storage": 3,
    "prelabel.segments": 4,
    "prelabel.state": 4,
    # The per-sample lifecycle and its engines.
    "prelabel.run": 5,
    "prelabel.evaluate": 6,
    # The webhook service over the lifecycle (HTTP, verification, queue, metrics).
    "prelabel.serve": 6,
    # Front-ends over the lifecycle, and the local API for trials.
    "prelabel.local": 7,
    "prelabel.local_sequences": 7,
    "prelabel.review": 7,
    "prelabel.demo": 7,
    "prelabel.emulator": 7,
    # The command line, above everything.
    "prelabel.cli": 8,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    if module == "prelabel":
        return LAYERS[module]
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for every prelabel module ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("prelabel"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("prelabel"):
                continue
            # `from prelabel.run import job` imports the module prelabel.run.job; a name that is
            # not a module comes from the package's (or module's) own namespace.
            submodules = [f"{node.module}.{a.name}" for a in node.names]
            if any(name not in MODULES for name in submodules):
                yield node.lineno, node.module
            for name in submodules:
                if name in MODULES:
                    yield node.lineno, name


GRAPH = {name: {m for _, m in imported_modules(path)} for name, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer(name)


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{MODULES[name].relative_to(PACKAGE.parent)}:{line}: {name} (layer {layer(name)}) "
        f"imports {target} (layer {layer(target)})"
        for name, path in MODULES.items()
        for line, target in imported_modules(path)
        if layer(target) > layer(name)
    ]
    assert upward == []


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in graph:
                continue
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_there_are_no_import_cycles() -> None:
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_longer_than_the_limit(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines (limit {MAX_LINES}): split it"


#: Each back-end package and the transformers names only it may import: its model classes,
#: configs and processors. Everything else reaches a model through the back-end's seam
#: (prelabel.backends.load_backend), so swapping models touches one package.
MODEL_OWNERS: dict[str, re.Pattern[str]] = {
    "prelabel.backends.grounded_sam": re.compile(
        r"^(GroundingDino|MMGroundingDino|AutoModelForZeroShotObjectDetection|Sam(?![23])|CLIPSeg)"
    ),
    "prelabel.backends.sam2_video": re.compile(r"^Sam2"),
    "prelabel.backends.sam3": re.compile(r"^Sam3"),
}


def transformers_names(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, name)`` for every name taken from transformers (``from transformers[.x] import
    name``, ``transformers.name``), and the model folder of ``transformers.models.<folder>``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "transformers" or node.module.startswith("transformers."):
                for alias in node.names:
                    yield node.lineno, alias.name
                parts = node.module.split(".")
                if len(parts) > 2 and parts[1] == "models":
                    yield node.lineno, _model_folder_class(parts[2])
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "transformers"
        ):
            yield node.lineno, node.attr


def _model_folder_class(folder: str) -> str:
    """``sam2_video`` -> ``Sam2Video``: a transformers model folder named like its classes."""
    special = {"clipseg": "CLIPSeg", "grounding_dino": "GroundingDino"}
    return special.get(folder, "".join(part.capitalize() for part in folder.split("_")))


def test_only_a_back_end_imports_its_model_classes() -> None:
    foreign = [
        f"{MODULES[name].relative_to(PACKAGE.parent)}:{line}: {name} imports {imported} "
        f"(only {owner} may)"
        for name, path in MODULES.items()
        for line, imported in transformers_names(path)
        for owner, pattern in MODEL_OWNERS.items()
        if pattern.match(imported) and not (name == owner or name.startswith(owner + "."))
    ]
    assert foreign == []


def test_the_model_class_rule_sees_each_way_of_importing() -> None:
    owned = MODEL_OWNERS["prelabel.backends.grounded_sam"]
    for name in ("SamModel", "SamProcessor", "GroundingDinoProcessor", "CLIPSegProcessor"):
        assert owned.match(name), name
    assert owned.match(_model_folder_class("sam")) and owned.match(_model_folder_class("clipseg"))
    assert not owned.match("Sam2VideoModel") and not owned.match("Sam3Model")
    assert MODEL_OWNERS["prelabel.backends.sam3"].match(_model_folder_class("sam3"))
    assert not owned.match("AutoConfig") and not owned.match("BatchFeature")


def test_the_front_ends_load_models_through_the_seam() -> None:
    """Nothing outside backends/ and the generic pipeline imports a back-end's modules."""
    inside = ("prelabel.backends", "prelabel.pipeline", "prelabel.weights")
    allowed = {"prelabel.backends", "prelabel.backends.base"}
    leaks = [
        f"{name} imports {target}"
        for name in MODULES
        if not name.startswith(inside)
        for target in GRAPH[name]
        if target.startswith("prelabel.backends.") and target not in allowed
    ]
    # The CLI's weight tools (`prelabel models convert-sam`) are the grounded_sam back-end's.
    assert leaks == ["prelabel.cli.models imports prelabel.backends.grounded_sam.convert_sam"]


def test_the_layers_name_existing_packages() -> None:
    assert [prefix for prefix in LAYERS if prefix not in MODULES] == []
