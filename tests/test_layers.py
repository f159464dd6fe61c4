"""The folders import in one direction (STYLE.md "Folders import in one direction").

Read with `ast` from the sources (every import, including those inside functions and under
TYPE_CHECKING): the shared modules in pumpwatch/ import no folder; segments/ is below
extractor/, which is below detector/; recorder/ stands beside them on segments/; the CLI (and
the demo that drives the CLI's commands) is on top. The folder graph has no cycle.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"segments": "segments", "extractor": "extractor", "detector": "detector", "recorder": "recorder"}
TOP_MODULES = {"demo", "__main__"}  # pumpwatch/*.py that drive commands sit with the CLI
RECORDER_MODULES: set[str] = set()  # pumpwatch/*.py that belong to the recorder layer (none now)

# Which layers each layer may import ("base" = the shared modules in pumpwatch/).
ALLOWED = {
    "base": {"base"},
    "segments": {"base", "segments"},
    "extractor": {"base", "segments", "extractor"},
    "detector": {"base", "segments", "extractor", "detector"},
    "recorder": {"base", "segments", "recorder"},
    "cli": {"base", "segments", "extractor", "detector", "recorder", "cli"},
}
# The Upbit listing watcher (recorder/upbit/) runs an extraction and the detector when a
# listing fires, and the housekeeping child assembles the shared listings of several recorders
# (detector/shared_listing.py): they alone in recorder/ may call them (neither imports
# recorder/, so no cycle).
ALLOWED_FROM = {"recorder.upbit": {"extractor", "detector"}, "recorder.housekeeping": {"detector"}}


def layer_of_module(name: str) -> str | None:
    """The layer of a module imported as `name` (None for anything outside PumpWatch)."""
    parts = name.split(".")
    if parts[0] != "pumpwatch":
        return None
    if len(parts) == 1:
        return "base"
    head = parts[1]
    if head in FOLDERS:
        return head
    if head == "cli" or head in TOP_MODULES:
        return "cli"
    if head in RECORDER_MODULES:
        return "recorder"
    return "base"


def source_files() -> dict[str, Path]:
    """``{dotted module name: path}`` of every PumpWatch source file."""
    out: dict[str, Path] = {}
    for folder, package in [*FOLDERS.items(), ("pumpwatch", "")]:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join(["pumpwatch", *([package] if package else []), *parts])] = path
    return out


def imports_of(path: Path, module: str) -> set[str]:
    """Every module `path` imports (absolute names; relative imports resolved against `module`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def folder_edges() -> dict[tuple[str, str], list[str]]:
    """``{(importer layer, imported layer): [importing module …]}`` across layers."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, path in source_files().items():
        src = layer_of_module(module)
        assert src is not None
        for name in imports_of(path, module):
            dst = layer_of_module(name)
            if dst is not None and dst != src:
                edges.setdefault((src, dst), []).append(f"{module} -> {name}")
    return edges


def test_the_scan_sees_the_known_imports() -> None:
    edges = folder_edges()
    assert ("extractor", "segments") in edges  # the extractor reads the store
    assert ("cli", "extractor") in edges and ("cli", "detector") in edges
    assert ("recorder", "segments") in edges  # the recorder writes the store
    assert len(source_files()) > 50


def test_folders_import_in_one_direction() -> None:
    wrong = []
    for (src, dst), where in sorted(folder_edges().items()):
        if dst in ALLOWED[src]:
            continue
        allowed_here = [
            w
            for w in where
            if any(
                w.startswith((f"{prefix}.", f"{prefix} ")) and dst in layers
                for prefix, layers in ((f"pumpwatch.{p}", ls) for p, ls in ALLOWED_FROM.items())
            )
        ]
        wrong += [w for w in where if w not in allowed_here]
    assert wrong == []


def test_folder_graph_has_no_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for src, dst in folder_edges():
        graph.setdefault(src, set()).add(dst)
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert order.index("segments") < order.index("extractor") < order.index("detector") < order.index("cli")
    assert order.index("segments") < order.index("recorder") < order.index("cli")
