"""deploy/kubernetes: rendered as ``kubectl apply -k`` would, every object valid against the
Kubernetes schemas (offline, strict), and the promises an operator relies on kept: probes on the
right paths and port, a grace period that outlasts the drain, the image's non-root user, Secret
keys that exist, documented variables, selectors that select, Prometheus on /metrics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from backends.db import DbSettings, new_encryption_key
from backends.vault import VaultSettings
from spacesvc.errors import ConfigError
from spacesvc.settings import Settings, parse_seconds

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests are written for, and the newest whose schemas the installed
# kubernetes-validate ships (to notice a field that a newer release drops).
KUBERNETES_VERSIONS = ("1.30", latest_version())
VARIABLE = re.compile(r"^(?:SPACESVC|VAULT)_[A-Z0-9_]+$")

Manifest = dict[str, Any]


def render(directory: Path) -> list[Manifest]:
    """The objects ``kubectl apply -k directory`` applies, for the subset of kustomize used here:
    ``resources`` (files and directories), ``labels`` on metadata only, and ``patches`` that are
    strategic merge patches of maps (no lists, no deletions)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {"apiVersion", "kind", "resources", "labels", "patches"}
    assert not unsupported, f"{directory}: this renderer does not implement {sorted(unsupported)}"
    objects: list[Manifest] = []
    for entry in kustomization["resources"]:
        path = directory / entry
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for group in kustomization.get("labels", []):
        assert not group.get("includeSelectors") and not group.get("includeTemplates"), "metadata labels only"
        for manifest in objects:
            manifest["metadata"].setdefault("labels", {}).update(group["pairs"])
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, "patches from files only"
        change = yaml.safe_load((directory / patch["path"]).read_text())
        merge(find(objects, change["kind"], change["metadata"]["name"]), change)
    return objects


def merge(target: Manifest, change: Manifest) -> None:
    """A strategic merge patch made of maps and scalars: maps merge, scalars replace."""
    for key, value in change.items():
        assert not isinstance(value, list) and value is not None, f"{key}: lists and deletions are not rendered here"
        if isinstance(value, dict):
            merge(target.setdefault(key, {}), value)
        else:
            target[key] = value


OVERLAYS = sorted(path.parent for path in (DEPLOY / "overlays").glob("*/kustomization.yaml"))


@pytest.fixture(scope="module", params=[DEPLOY, *OVERLAYS], ids=lambda path: path.name)
def rendered(request: pytest.FixtureRequest) -> list[Manifest]:
    """The base, and each overlay shipped beside it: every test below holds for all of them."""
    return render(request.param)


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def pod_labels(deployment: Manifest) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def deployments(rendered: list[Manifest]) -> list[Manifest]:
    return [o for o in rendered if o["kind"] == "Deployment"]


def only_container(deployment: Manifest) -> Manifest:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def container_env(container: Manifest) -> dict[str, Manifest]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def port_number(container: Manifest, port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(number)


def example_secret() -> Manifest:
    return yaml.safe_load((DEPLOY / "secret.example.yaml").read_text())


def variables_set(rendered: list[Manifest]) -> dict[str, str | None]:
    """Every variable the spacesvc pods get: the ConfigMap's, then the container's own env
    (literal values; None for a value taken from a Secret)."""
    variables: dict[str, str | None] = dict(find(rendered, "ConfigMap", "spacesvc")["data"])
    for name, entry in container_env(only_container(find(rendered, "Deployment", "spacesvc"))).items():
        variables[name] = entry.get("value")
    return variables


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(rendered: list[Manifest], version: str) -> None:
    kinds = {o["kind"] for o in rendered}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ServiceAccount", "ConfigMap"} <= kinds
    for manifest in [*rendered, example_secret()]:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(p) for p in error.path)
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']} at {where}: {error.message}")


def test_the_kustomization_applies_no_secret_and_no_prometheus_configuration(rendered: list[Manifest]) -> None:
    assert [o for o in rendered if o["kind"] == "Secret"] == []
    assert all("apiVersion" in o and "kind" in o for o in rendered)
    scrape = yaml.safe_load((DEPLOY / "prometheus-scrape.yaml").read_text())
    assert "kind" not in scrape and "apiVersion" not in scrape


def test_probes_hit_healthz_and_readyz_on_the_port_the_service_listens_on(rendered: list[Manifest]) -> None:
    container = only_container(find(rendered, "Deployment", "spacesvc"))
    (listening,) = [p["containerPort"] for p in container["ports"]]
    command = container["command"]
    assert command[:2] == ["spacesvc", "serve"]
    assert int(command[command.index("--port") + 1]) == listening
    assert re.search(rf"^EXPOSE {listening}$", (ROOT / "Dockerfile").read_text(), re.M)
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        assert port_number(container, http["port"]) == listening, probe
        paths[probe] = http["path"]
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    # /readyz answers within 3 s (spacesvc/health.py); a shorter probe timeout fails a slow answer.
    assert container["readinessProbe"]["timeoutSeconds"] > 3


def test_the_grace_period_outlasts_the_shutdown_delay_and_timeout(rendered: list[Manifest]) -> None:
    deployment = find(rendered, "Deployment", "spacesvc")
    env = container_env(only_container(deployment))
    durations = {name: env[name]["value"] for name in ("SPACESVC_SHUTDOWN_DELAY", "SPACESVC_SHUTDOWN_TIMEOUT")}
    drain = sum(parse_seconds(durations, name, default=0.0) for name in durations)
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain


def effective_security(pod: Manifest, container: Manifest) -> dict[str, Any]:
    """The container's securityContext over the pod's (as the kubelet applies them)."""
    return {**pod.get("securityContext", {}), **container.get("securityContext", {})}


def test_every_pod_is_non_root_read_only_and_without_privileges(rendered: list[Manifest]) -> None:
    assert {d["metadata"]["name"] for d in deployments(rendered)} == {"spacesvc", "redis"}
    for deployment in deployments(rendered):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            security = effective_security(pod, container)
            where = f"{deployment['metadata']['name']}/{container['name']}"
            assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert "memory" in container["resources"]["limits"], where


def test_spacesvc_runs_as_the_user_the_dockerfile_creates(rendered: list[Manifest]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user is not None, "the Dockerfile's USER is a numeric uid:gid"
    assert re.search(rf"useradd [^\n]*--uid {user[1]} --gid {user[2]}\b", dockerfile)
    pod = find(rendered, "Deployment", "spacesvc")["spec"]["template"]["spec"]
    security = effective_security(pod, only_container(find(rendered, "Deployment", "spacesvc")))
    assert (security["runAsUser"], security["runAsGroup"]) == (int(user[1]), int(user[2]))


def test_the_only_writable_place_is_tmp(rendered: list[Manifest]) -> None:
    deployment = find(rendered, "Deployment", "spacesvc")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    writable = [m["mountPath"] for m in only_container(deployment)["volumeMounts"] if not m.get("readOnly")]
    assert writable == ["/tmp"]
    (tmp,) = [m["name"] for m in only_container(deployment)["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp]


def secret_references(rendered: list[Manifest]) -> list[tuple[str, str]]:
    """(Secret name, key) for every secretKeyRef and every key a secret volume mounts."""
    found = []
    for deployment in deployments(rendered):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    found.append((ref["name"], ref["key"]))
            assert all("secretRef" not in source for source in container.get("envFrom", []))
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"].get("items"), f"volume {volume['name']}: name the keys it mounts"
                found += [(volume["secret"]["secretName"], item["key"]) for item in volume["secret"]["items"]]
    return found


def test_every_secret_reference_names_a_key_of_the_example_secret(rendered: list[Manifest]) -> None:
    example = example_secret()
    defined = {(example["metadata"]["name"], key) for key in example["stringData"]}
    referenced = secret_references(rendered)
    assert sorted(set(referenced) - defined) == []
    assert sorted(defined - set(referenced)) == [], "the example defines keys nothing reads"


def test_the_example_secret_holds_placeholders_only() -> None:
    example = example_secret()
    assert "data" not in example
    for key, value in example["stringData"].items():
        assert "REPLACE-ME" in value, key


def test_every_variable_the_manifests_set_is_documented(rendered: list[Manifest], repo_root: Path) -> None:
    documented = (repo_root / "docs" / "configuration.md").read_text()
    names = set(variables_set(rendered))
    assert all(VARIABLE.match(name) for name in names), sorted(names)
    assert sorted(n for n in names if f"`{n}`" not in documented) == []


def test_the_manifests_give_settings_the_service_accepts_once_the_secret_is_filled(
    rendered: list[Manifest],
) -> None:
    example = example_secret()["stringData"]
    container = only_container(find(rendered, "Deployment", "spacesvc"))
    from_secret = {
        name: example[entry["valueFrom"]["secretKeyRef"]["key"]]
        for name, entry in container_env(container).items()
        if "valueFrom" in entry
    }
    env = {name: value for name, value in variables_set(rendered).items() if value is not None} | from_secret
    if env["SPACESVC_SECRET_BACKEND"] == "vault":  # the Kubernetes auth overlay: no Vault key in the Secret
        settings = Settings.from_env({k: v for k, v in env.items() if not k.startswith("SPACESVC_VAULT_ROLE")})
        assert isinstance(settings.secrets, VaultSettings) and settings.secrets.auth_method_name == "Kubernetes auth"
        assert (
            settings.secrets.k8s_role
            == find(rendered, "Deployment", "spacesvc")["spec"]["template"]["spec"]["serviceAccountName"]
        )
        return
    with pytest.raises(ConfigError, match="SPACESVC_ENCRYPTION_KEYS"):
        Settings.from_env(env)  # the placeholder itself is refused: a copied example cannot start
    settings = Settings.from_env(env | {"SPACESVC_ENCRYPTION_KEYS": new_encryption_key("k1")})
    assert isinstance(settings.secrets, DbSettings) and settings.database_url is not None


def test_the_service_and_the_disruption_budget_select_the_spacesvc_pods_only(rendered: list[Manifest]) -> None:
    deployment = find(rendered, "Deployment", "spacesvc")
    labels = pod_labels(deployment)
    other_pods = [pod_labels(o) for o in deployments(rendered) if o is not deployment]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    budget = find(rendered, "PodDisruptionBudget", "spacesvc")
    service = find(rendered, "Service", "spacesvc")
    for selector in (budget["spec"]["selector"]["matchLabels"], service["spec"]["selector"]):
        assert selects(selector, labels)
        assert not any(selects(selector, labels) for labels in other_pods)
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["replicas"] - budget["spec"]["maxUnavailable"] >= 2


def test_each_service_targets_its_pods_container_port(rendered: list[Manifest]) -> None:
    for service in (o for o in rendered if o["kind"] == "Service"):
        (deployment,) = [o for o in deployments(rendered) if selects(service["spec"]["selector"], pod_labels(o))]
        container = only_container(deployment)
        listening = {p["containerPort"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port_number(container, port["targetPort"]) in listening, service["metadata"]["name"]
    assert [p["port"] for p in find(rendered, "Service", "spacesvc")["spec"]["ports"]] == [8080]


def test_the_rate_limit_storage_is_the_bundled_redis_service(rendered: list[Manifest]) -> None:
    url = urlsplit(find(rendered, "ConfigMap", "spacesvc")["data"]["SPACESVC_RATE_LIMIT_STORAGE"])
    assert url.scheme == "redis"
    service = find(rendered, "Service", str(url.hostname))
    assert url.port in [p["port"] for p in service["spec"]["ports"]]


def test_prometheus_scrapes_metrics_on_the_container_port(rendered: list[Manifest]) -> None:
    deployment = find(rendered, "Deployment", "spacesvc")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) in [p["containerPort"] for p in only_container(deployment)["ports"]]
    assert find(rendered, "ConfigMap", "spacesvc")["data"]["SPACESVC_METRICS"] == "on"
    (job,) = yaml.safe_load((DEPLOY / "prometheus-scrape.yaml").read_text())["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    keeps = {tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keeps[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)] == "true"
    assert keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)] == "spacesvc"
