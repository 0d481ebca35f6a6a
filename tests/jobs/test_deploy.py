"""docker-compose.yml and Dockerfile: validated with the compose specification's JSON schema
(vendored from Debian's docker-compose 1.29 package) and, when installed, `docker-compose config`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).parent / "data" / "compose_spec.json").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _errors(doc: dict) -> list[str]:
    return [e.message for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(doc)]


def test_compose_file_matches_the_compose_spec(compose):
    assert _errors(compose) == []


def test_schema_check_rejects_a_broken_file(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["restart_policy"] = "always"  # not a service key
    broken["services"]["redis"]["ports"] = "6379"  # must be a list
    assert len(_errors(broken)) >= 2


def test_services_env_and_volumes_are_consistent(compose):
    services = compose["services"]
    assert {"redis", "postgres", "api", "worker", "migrate", "ollama"} <= set(services)
    # worker must be scalable with --scale: no fixed container name, no host port
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]
    assert services["ollama"]["profiles"] == ["llm"]
    assert all("profiles" not in services[s] for s in ("redis", "postgres", "api", "worker", "migrate"))
    for name in ("api", "worker", "migrate"):
        env = services[name]["environment"]
        assert env["LABELER_REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in env["LABELER_DATABASE_URL"]
        # credentials in the URL match the postgres service
        pg = services["postgres"]["environment"]
        assert f"//{pg['POSTGRES_USER']}:" in env["LABELER_DATABASE_URL"]
        assert env["LABELER_DATABASE_URL"].endswith("/" + pg["POSTGRES_DB"])
        for dep in services[name].get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
    named = set(compose.get("volumes", {}))
    for svc in services.values():
        for v in svc.get("volumes", []):
            src = v.split(":", 1)[0]
            if not src.startswith((".", "/")):
                assert src in named, f"volume {src} is not declared"
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_commands_are_real_labeler_commands(compose):
    from typer.main import get_command

    from labeler.cli import app

    cli = get_command(app)
    for name in ("api", "worker", "migrate"):
        cmd = compose["services"][name]["command"]
        assert cmd[0] == "labeler"
        assert cmd[1] in cli.commands, f"{name}: `labeler {cmd[1]}` does not exist"


def test_dockerfile_installs_cpu_torch_then_the_package():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    torch = text.index("torch==2.13.0")
    assert "download.pytorch.org/whl/cpu" in text
    assert text.index('pip install -e ".[queue,postgres]"') > torch
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and ".env" in ignored


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_parses_it():
    out = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert {"redis", "postgres", "api", "worker", "migrate"} <= set(out.stdout.split())
