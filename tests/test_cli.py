"""The picospec command: subcommands parse, errors are one clear line."""

from __future__ import annotations

import json
import subprocess
import sys

from picospec.cli import main


def test_python_dash_m_prints_the_version():
    out = subprocess.run(
        [sys.executable, "-m", "picospec", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    assert out.stdout.startswith("picospec ")


def test_models_list_json_names_every_pair(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PICOSPEC_CACHE", str(tmp_path))
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["pair"] for r in rows} == {"smollm2", "gemma3"}


def test_unknown_pair_is_one_clear_error(capsys):
    assert main(["models", "prepare", "--pair", "llama70b"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == "picospec: error: unknown model pair 'llama70b'; choose one of smollm2, gemma3"
    )


def test_bench_models_needs_both_paths(capsys):
    assert main(["bench", "models", "--drafter", "d.gguf"]) == 2
    assert "--drafter and --target go together" in capsys.readouterr().err


def test_bench_codec_on_synthetic_rows_reports_the_issue_fields(capsys):
    assert (
        main(
            [
                "bench",
                "codec",
                "--json",
                "--model",
                "synthetic",
                "--vocab",
                "4096",
                "--rows",
                "4",
                "--repeats",
                "1",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    for key in (
        "vocab",
        "k",
        "native_us_per_row",
        "numpy_us_per_row",
        "speedup",
        "bytes_per_position",
        "dense_fp32_bytes",
    ):
        assert key in r
    assert r["vocab"] == 4096 and r["rows_source"] == "synthetic" and r["validated"]


def test_sim_prints_every_mode_for_the_default_regime(capsys):
    assert main(["sim", "--accept", "0.8", "--seeds", "2", "--tokens", "64"]) == 0
    out = capsys.readouterr().out
    assert "jetson-agx-orin-llama3.2-1b" in out
    for mode in ("pipeline", "sync", "cloud-only", "edge-only"):
        assert f"\n{mode}" in out


def test_sim_lists_builtin_profiles_and_refuses_unknown_ones(capsys):
    assert main(["sim", "--list"]) == 0
    assert "4xa100-llama3.1-70b" in capsys.readouterr().out
    assert main(["sim", "--edge", "no-such-edge"]) == 2
    assert "no built-in of that name" in capsys.readouterr().err


def test_sim_json_has_speedups(capsys):
    assert main(["sim", "--json", "--seeds", "1", "--tokens", "32", "--rtt", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["modes"]["cloud-only"]["vs_cloud_only"] == 1.0
    assert "RTT 5 ms" in out["link"]
