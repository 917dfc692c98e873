"""cffi API-mode builder of the C kernels: the extension picospec.codec._kernels.

setup.py names ``build.py:ffibuilder``; ``python build.py`` compiles the
extension in place (codec/_kernels*.so) for quick development. The cdef is the
text between the cdef markers of kernels/picospec_kernels.h, so the header is
the single description of the C API.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent
KERNELS = ROOT / "kernels"
HEADER = KERNELS / "picospec_kernels.h"
CFLAGS = ["-O3", "-ffp-contract=off", "-std=c99"]


def header_cdef(text: str) -> str:
    """The C declarations between the cdef markers, as cffi's cdef accepts them."""
    found = re.search(r"/\* --- cdef begin.*?\*/(.*)/\* --- cdef end", text, re.S)
    if found is None:
        raise RuntimeError(f"{HEADER} has no `cdef begin` / `cdef end` markers")
    return found.group(1)


def kernel_sources(base: Path | None) -> list[str]:
    """The kernels' C sources, relative to base (setuptools wants the repository
    root), or absolute paths when base is None."""
    found = KERNELS.glob("*.c")
    sources = sorted(str(p) if base is None else os.path.relpath(p, base) for p in found)
    if not sources:
        raise RuntimeError(f"no C sources in {KERNELS}")
    return sources


def make_builder(base: Path | None) -> FFI:
    """The cffi builder, with source paths relative to base (absolute if None)."""
    ffi = FFI()
    ffi.cdef(header_cdef(HEADER.read_text()))
    ffi.set_source(
        "picospec.codec._kernels",
        '#include "picospec_kernels.h"',
        sources=kernel_sources(base),
        include_dirs=[str(KERNELS) if base is None else os.path.relpath(KERNELS, base)],
        extra_compile_args=CFLAGS,
        libraries=["m"],
    )
    return ffi


ffibuilder = make_builder(ROOT)

if __name__ == "__main__":
    tmpdir = ROOT / "build" / "cffi"
    built = Path(make_builder(None).compile(tmpdir=str(tmpdir)))
    target = ROOT / "codec" / built.name
    built.replace(target)
    print(f"built {target.relative_to(ROOT)}")
