"""The Kubernetes manifests in ``configs/deploy/``: well formed, wired together, and every
command line in them is one the CLI accepts.

A command line is parsed by the real click command (``make_context``: option names, types,
choices, required options), with each path it names created under a temporary root: a path
must lie on a volume the container mounts, and a file a secret or config map provides exists as
a file. Nothing is run.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from prelabel.cli import main
from prelabel.config import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "configs" / "deploy"


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents() if doc["kind"] == kind]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in by_kind("Deployment"):
        yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
    for doc in by_kind("CronJob"):
        yield doc["metadata"]["name"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [(name, spec, c) for name, spec in pod_specs() for c in spec["containers"]]


def test_every_manifest_is_a_named_kubernetes_object() -> None:
    docs = documents()
    assert {doc["kind"] for doc in docs} >= {"Deployment", "Service", "CronJob", "ConfigMap"}
    for doc in docs:
        assert doc["apiVersion"] and doc["metadata"]["name"], doc


@pytest.mark.parametrize(
    ("workload", "container"), [(c[0], c[2]) for c in containers()], ids=lambda v: str(v)[:30]
)
def test_each_command_line_is_accepted_by_the_cli(
    workload: str, container: dict[str, Any], tmp_path: Path
) -> None:
    spec = dict(pod_specs())[workload]
    assert container["command"] == ["prelabel"]
    args = [materialise(arg, container, spec, tmp_path) for arg in container["args"]]
    command = main.commands[args[0]]
    with command.make_context(args[0], args[1:]) as ctx:
        assert ctx.params  # parsed; the command itself is not run


def materialise(arg: str, container: dict[str, Any], spec: dict[str, Any], root: Path) -> str:
    """A path argument moved under ``root`` and created (a file for secret and config map
    volumes, a directory otherwise); other arguments unchanged."""
    if not arg.startswith("/"):
        return arg
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = [m for m in container["volumeMounts"] if (arg + "/").startswith(m["mountPath"] + "/")]
    assert mounts, f"{arg} is on no volume the container mounts"
    volume = volumes[mounts[0]["name"]]
    local = root / arg.lstrip("/")
    if "secret" in volume or "configMap" in volume:
        key = arg[len(mounts[0]["mountPath"]) + 1 :]
        provided = [i["path"] for i in volume.get("secret", {}).get("items", [])]
        config_maps = {d["metadata"]["name"]: d for d in by_kind("ConfigMap")}
        if "configMap" in volume:
            provided = list(config_maps[volume["configMap"]["name"]]["data"])
        assert key in provided, f"{arg}: no key {key} in {volume['name']}"
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text("")
    else:
        local.mkdir(parents=True, exist_ok=True)
    return str(local)


def test_the_config_map_holds_a_valid_config() -> None:
    for doc in by_kind("ConfigMap"):
        for text in doc["data"].values():
            Settings.model_validate(yaml.safe_load(text))


def test_serve_is_probed_on_its_port_and_reached_through_the_service() -> None:
    [deployment] = by_kind("Deployment")
    [service] = by_kind("Service")
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    args = container["args"]
    assert args[0] == "serve" and args[args.index("--host") + 1] == "0.0.0.0"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["http"] == int(args[args.index("--port") + 1])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one pod on the state file


@pytest.mark.parametrize(("workload", "container"), [(c[0], c[2]) for c in containers()])
def test_the_api_key_and_the_webhook_secret_come_from_secrets(
    workload: str, container: dict[str, Any]
) -> None:
    env = {e["name"]: e for e in container["env"]}
    assert "value" not in env["SEGMENTS_API_KEY"]
    assert env["SEGMENTS_API_KEY"]["valueFrom"]["secretKeyRef"]["name"]
    if container["args"][0] == "serve":
        spec = dict(pod_specs())[workload]
        path = container["args"][container["args"].index("--webhook-secret-file") + 1]
        [mount] = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        assert (
            volume["secret"]["secretName"]
            == env["SEGMENTS_API_KEY"]["valueFrom"]["secretKeyRef"]["name"]
        )


def test_the_cron_job_runs_one_sync_cycle_at_a_time() -> None:
    [cron] = by_kind("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    [container] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["sync", "--once"]


# The image (Containerfile) against the manifests: the paths they mount, the user they run as,
# the command, the port probed, and one image name everywhere. tests/test_container.py builds
# and runs the image itself.

REPO = DEPLOY.parents[1]


def containerfile() -> list[str]:
    """The Containerfile's instructions, continuation lines joined, comments dropped."""
    text = (REPO / "Containerfile").read_text().replace("\\\n", " ")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def instruction(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in containerfile() if line.split()[0] == name]


def created_folders() -> dict[str, str]:
    """Each folder the image creates with ``install -d``, and its owner (``root`` by default)."""
    folders = {}
    for run in instruction("RUN"):
        for command in run.split("&&"):
            words = command.split()
            if words[:2] != ["install", "-d"]:
                continue
            owner = words[words.index("-o") + 1] if "-o" in words else "root"
            folders |= {word: owner for word in words if word.startswith("/")}
    return folders


def test_the_image_creates_every_path_the_manifests_mount() -> None:
    folders = created_folders()
    mounted = {m["mountPath"]: m for _, _, c in containers() for m in c["volumeMounts"]}
    assert set(mounted) == set(folders)
    for _, spec, container in containers():
        user = str(spec["securityContext"]["runAsUser"])
        for mount in container["volumeMounts"]:  # the user writes where the pod may write
            assert (folders[mount["mountPath"]] == user) != mount.get("readOnly", False), mount


def test_the_image_runs_prelabel_as_the_user_the_manifests_name() -> None:
    [user] = instruction("USER")
    [entrypoint] = instruction("ENTRYPOINT")
    for _, spec, container in containers():
        context = spec["securityContext"]
        assert user == f"{context['runAsUser']}:{context['fsGroup']}"
        assert context["runAsNonRoot"] and context["runAsUser"] != 0
        assert json.loads(entrypoint) == container["command"]


def test_the_health_check_probes_the_port_serve_listens_on() -> None:
    [healthcheck] = instruction("HEALTHCHECK")
    [deployment] = by_kind("Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    port = container["args"][container["args"].index("--port") + 1]
    assert f"http://127.0.0.1:{port}/healthz" in healthcheck
    assert instruction("EXPOSE") == [port]


def test_no_secret_is_a_build_argument_or_baked_into_the_image() -> None:
    declared = " ".join(instruction("ARG") + instruction("ENV")).upper()
    for word in ("KEY", "SECRET", "TOKEN", "PASSWORD"):
        assert word not in declared


def test_the_manifests_and_the_ray_cluster_name_the_same_image() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    image = f"REPLACE_ME/prelabel:{version}"
    assert {c["image"] for _, _, c in containers()} == {image}
    assert f"image: {image}" in (REPO / "configs" / "ray-cluster.yaml").read_text()
