"""The systemd unit and the example config, checked without booting systemd (the
container check, ``deploy/systemd/container-check.sh``, runs them under it):
``systemd-analyze verify`` with any stderr a failure (it exits 0 on lines it
cannot parse), the offline security exposure, the example edge.toml loading,
and ``edge serve`` refusing a bad config file by name and key; and the GPU
measurement script's steps, run on a CPU."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from picospec.edge.config import load

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "systemd"
UNIT = DEPLOY / "picospec-edge.service"
analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def installed_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's picospec (verify
    checks that the command exists)."""
    exe = Path(sys.executable).with_name("picospec")
    text = UNIT.read_text().replace("/opt/picospec/bin/picospec", str(exe))
    out = tmp_path / UNIT.name
    out.write_text(text)
    return out


@analyze
def test_systemd_analyze_verify_says_nothing(tmp_path):
    r = subprocess.run(
        ["systemd-analyze", "verify", str(installed_unit(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stderr


@analyze
def test_the_units_security_exposure_is_low(tmp_path):
    # --threshold counts in tenths of the printed level: 30 is an exposure of 3.0
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=30",
         str(installed_unit(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
    assert level is not None, r.stdout + r.stderr
    assert r.returncode == 0 and float(level.group(1)) <= 3.0, level.group(0)


def test_the_unit_is_type_notify_with_a_watchdog_a_credential_and_the_example_config():
    unit = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "LoadCredential=token:",
                 "StateDirectory=", "CacheDirectory=", "User=picospec", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "PrivateTmp=yes"):  # fmt: skip
        assert re.search(rf"^{re.escape(line)}", unit, re.M), line
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M)
    assert exec_start is not None and "edge serve --config /etc/picospec/edge.toml" in exec_start[1]
    cfg = load(DEPLOY / "edge.toml")
    assert cfg.listen == "127.0.0.1:8080" and cfg.fallback == "local" and cfg.pin


def test_edge_serve_refuses_a_bad_config_file_naming_the_file_and_the_key(tmp_path):
    bad = tmp_path / "edge.toml"
    bad.write_text('[edge]\nclod = "host:4433"\n')
    r = subprocess.run([sys.executable, "-m", "picospec", "edge", "serve", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2
    assert f"{bad}: unknown key edge.clod" in r.stderr
    bad.write_text("[edge]\nqueue_size = 'eight'\n")
    r = subprocess.run([sys.executable, "-m", "picospec", "edge", "serve", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "edge.queue_size must be an integer" in r.stderr


@pytest.mark.slow
def test_the_gpu_measurement_script_runs_its_steps_on_a_cpu(tmp_path):
    """deploy/gpu/measure.sh with DEVICE=cpu: picospec from the tree (no install,
    reference kernels), the torch contract, bench gpu's tiny model, a profile."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DEVICE": "cpu",
        "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
    }  # fmt: skip
    done = subprocess.run(["bash", str(ROOT / "deploy/gpu/measure.sh")], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = tmp_path / "out"
    assert re.search(r"\d+ passed", (out / "contract.log").read_text())
    assert "failed" not in (out / "contract.log").read_text()
    profile = (out / "profile.json").read_text()
    assert '"verify_ms"' in profile and '"batched_round_ms"' in profile
    assert "no CUDA device" in (out / "machine.txt").read_text()
