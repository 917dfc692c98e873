"""Timing profiles: round trips through JSON, built-ins, and clear refusals."""

from __future__ import annotations

import json

import pytest

from picospec.codec.errors import ConfigError
from picospec.lab.profiles import BUILTIN, CloudProfile, EdgeProfile, from_dict, load, save, to_dict


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_round_trips_and_says_where_it_comes_from(name, tmp_path):
    p = BUILTIN[name]
    assert p.source and from_dict(to_dict(p)) == p
    save(p, tmp_path / "p.json")
    assert load(tmp_path / "p.json") == p == load(name)


def test_cloud_forward_extrapolates_linearly_past_the_table():
    c = CloudProfile("c", verify_ms=(10.0, 12.0, 15.0))
    assert [c.forward_ms(n) for n in (1, 3, 4, 6)] == [10.0, 15.0, 18.0, 24.0]
    assert CloudProfile("flat", verify_ms=(7.0,)).forward_ms(3) == 21.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "edge", "name": "e"}, "edge profile needs draft_ms"),
        ({"kind": "edge", "name": "e", "draft_ms": 0}, "draft_ms must be > 0"),
        ({"kind": "edge", "name": "e", "draft_ms": 5, "speed": 1}, "unknown edge profile field"),
        ({"kind": "cloud", "name": "c", "verify_ms": []}, "at least one entry"),
        ({"kind": "cloud", "name": "c", "verify_ms": [1, "x"]}, r"verify_ms\[1\]"),
        ({"kind": "link", "name": "l", "rtt_ms": 20, "loss": 1.0}, "loss must be in"),
        ({"kind": "gpu", "name": "g"}, "kind must be one of"),
    ],
)
def test_bad_profiles_are_refused_naming_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(data)


def test_load_refuses_a_missing_file_a_bad_file_and_the_wrong_kind(tmp_path):
    with pytest.raises(ConfigError, match="no built-in of that name"):
        load("no-such-profile", "edge")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        load(bad)
    good = tmp_path / "edge.json"
    good.write_text(json.dumps(to_dict(EdgeProfile("e", draft_ms=3.0))))
    with pytest.raises(ConfigError, match="a edge profile where a cloud profile is needed"):
        load(good, "cloud")
