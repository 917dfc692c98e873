"""The architecture, as the imports show it.

What runs on a robot or in the cloud (codec, edge, cloud, picospec.runtime)
never imports the evaluation lab; edge and cloud never import each other; the
sans-I/O modules import no clock, socket, thread or model code; each model
library and the QUIC library are imported by one adapter module. Checked on
the source (every import statement, at any depth), so a lazy import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"codec": "picospec.codec", "edge": "picospec.edge", "cloud": "picospec.cloud"}
RUNTIME = ("picospec.codec", "picospec.edge", "picospec.cloud", "picospec.runtime")
SANS_IO = (
    "picospec.codec.messages",
    "picospec.codec.framing",
    "picospec.codec.verify",
    "picospec.codec.draft",
    "picospec.edge.session",
    "picospec.edge.text",
    "picospec.edge.model",
    "picospec.cloud.session",
    "picospec.cloud.target",
    "picospec.cloud.limits",
)
IO = ("asyncio", "socket", "time", "threading", "aioquic", "llama_cpp", "torch", "picospec.runtime")
ADAPTERS = {
    "llama_cpp": {"picospec.runtime.llamacpp"},
    "aioquic": {"picospec.runtime.quic"},
    "torch": {"picospec.cloud.torch_sampling", "picospec.cloud.torch_backend"},
    "onnxruntime_genai": {"picospec.cloud.ort_backend"},
    "tensorrt_llm": {"picospec.cloud.trtllm_backend"},
}


def modules() -> dict[str, Path]:
    """Every module of the package by its installed name."""
    out = {}
    for folder, package in [*PACKAGES.items(), ("picospec", "picospec")]:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            out[name] = path
    return out


def imports(name: str, path: Path) -> set[str]:
    """Every module path imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


ALL = modules()


def under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@pytest.mark.parametrize("name", [m for m in ALL if any(under(m, r) for r in RUNTIME)])
def test_the_runtime_never_imports_the_lab(name):
    lab = {m for m in imports(name, ALL[name]) if under(m, "picospec.lab")}
    assert not lab, f"{name} imports {sorted(lab)}"


@pytest.mark.parametrize("name", [m for m in ALL if under(m, "picospec.edge")])
def test_the_edge_never_imports_the_cloud(name):
    assert not {m for m in imports(name, ALL[name]) if under(m, "picospec.cloud")}


@pytest.mark.parametrize("name", [m for m in ALL if under(m, "picospec.cloud")])
def test_the_cloud_never_imports_the_edge(name):
    assert not {m for m in imports(name, ALL[name]) if under(m, "picospec.edge")}


@pytest.mark.parametrize("name", SANS_IO)
def test_sans_io_modules_import_no_clock_socket_thread_or_model(name):
    bad = {m for m in imports(name, ALL[name]) for io in IO if under(m, io)}
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("library", sorted(ADAPTERS))
def test_each_heavy_library_has_its_adapter_and_no_other_importer(library):
    users = {
        name for name, path in ALL.items() if any(under(m, library) for m in imports(name, path))
    }
    assert users <= ADAPTERS[library], (
        f"{library} is imported by {sorted(users - ADAPTERS[library])}"
    )


def test_the_layout_check_sees_the_modules_it_names():
    assert set(SANS_IO) <= set(ALL) and all(m in ALL for a in ADAPTERS.values() for m in a)
    assert "picospec.lab.sim" in ALL and "picospec.runtime.quic" in ALL
