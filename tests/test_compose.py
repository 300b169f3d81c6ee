"""The compose stack: structure always, and `docker-compose config` where it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_the_services_and_their_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "worker-otp", "worker-bulk", "flower", "sandbox"}
    assert all("healthcheck" in service for service in services.values())


def test_redis_keeps_its_data_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_codes_and_campaigns_have_their_own_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "otp,default" in services["worker-otp"]["command"]
    assert "bulk" in services["worker-bulk"]["command"]


def test_each_worker_is_healthy_only_when_it_consumes_its_own_lanes(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, lanes in (("worker-otp", "otp,default"), ("worker-bulk", "bulk")):
        service = services[name]
        node = service["command"][service["command"].index("--name") + 1].replace("%h", "")
        [check] = service["healthcheck"]["test"][1:]
        assert check.startswith("smsgw health "), check
        assert f"--lanes {lanes} " in check and f"--worker {node}$$HOSTNAME" in check
        assert service["environment"]["SMSGW_METRICS_PORT"] == "9808"
        assert "9808" in service["expose"]
    # A large campaign's backlog is normal: the bulk worker is not unhealthy for its age
    bulk_check = services["worker-bulk"]["healthcheck"]["test"][1]
    otp_check = services["worker-otp"]["healthcheck"]["test"][1]
    assert "--skip-queue-age" in bulk_check and "--skip-queue-age" not in otp_check


def test_flower_needs_credentials_and_ports_stay_on_loopback(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    assert ":?" in flower["environment"]["FLOWER_BASIC_AUTH"]
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for port in published)


def test_only_smsgw_variables_configure_it() -> None:
    variables = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    assert variables and all(name.startswith("SMSGW_") for name in variables)
    documented = set(re.findall(r"^(SMSGW_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert variables <= documented


def test_the_image_runs_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+-slim", dockerfile, re.M)
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1] not in {"root", "0"}


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    # Given .env.example with its two secrets filled in
    env = (ROOT / ".env.example").read_text()
    env = env.replace("SMSGW_SECRET_KEY=\n", "SMSGW_SECRET_KEY=test-key\n")
    env = env.replace("SMSGW_FLOWER_PASSWORD=\n", "SMSGW_FLOWER_PASSWORD=test-password\n")
    filled = tmp_path / "filled.env"
    filled.write_text(env)
    # When docker-compose checks the file / Then it is valid
    ok = _config(filled)
    assert ok.returncode == 0, ok.stderr
    # And without the secrets it refuses, naming what is missing
    refused = _config(ROOT / ".env.example")
    assert refused.returncode != 0
    assert "SMSGW_SECRET_KEY" in refused.stderr


def _config(env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
