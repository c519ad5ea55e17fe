"""deploy/k8s, checked offline: the base and every overlay rendered (tests/deploy/_kustomize.py) and
validated in strict mode against the Kubernetes JSON schemas bundled by kubernetes-validate, then the
operational rules: probes on the health port, the drain bound, security, disruption and scaling."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from service.runtime.settings import ServiceSettings
from tests.deploy._deployfiles import (
    K8S_BASE,
    K8S_DIR,
    KUBERNETES_VERSIONS,
    dockerfile_instructions,
    k8s_directories,
    k8s_overlays,
    rendered,
    settings_from_environment,
)
from tests.deploy._kustomize import KustomizeError, render

DIRECTORIES = k8s_directories()
IDS = [str(path.relative_to(K8S_DIR)) for path in DIRECTORIES]
DRAIN_MARGIN_S = 10
"""Time after the drain for committing offsets, leaving the group and flushing the producer."""


def _one(resources: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    matches = [resource for resource in resources if resource["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def _container(resources: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    containers = _one(resources, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _settings(resources: tuple[dict[str, Any], ...]) -> ServiceSettings:
    """The ServiceSettings the container gets: ConfigMap, then Secret, then its own env."""
    env: dict[str, str] = {}
    env.update(_one(resources, "ConfigMap")["data"])
    env.update(_one(resources, "Secret").get("stringData", {}))
    for item in _container(resources).get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", "example-pod", item["value"])
    return settings_from_environment(env)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("directory", DIRECTORIES, ids=IDS)
def test_every_rendered_resource_validates_strictly_against_the_kubernetes_schemas(
    directory: Path, version: str
) -> None:
    resources = rendered(directory)
    assert resources
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(part) for part in error.path)
            pytest.fail(f"{resource['kind']}/{resource['metadata']['name']} at {path}: {error.message}")


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    """Guard against schemas that accept anything."""
    deployment = dict(_one(rendered(K8S_BASE), "Deployment"))
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_base_has_every_resource_the_service_needs() -> None:
    kinds = sorted(resource["kind"] for resource in rendered(K8S_BASE))
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount",
        ]
    )


@pytest.mark.parametrize("directory", k8s_overlays(), ids=IDS[1:])
def test_overlay_sets_a_namespace_and_a_real_image(directory: Path) -> None:
    resources = rendered(directory)
    namespaces = {
        resource["metadata"].get("namespace") for resource in resources if resource["kind"] != "Namespace"
    }
    assert len(namespaces) == 1
    assert None not in namespaces
    image = _container(resources)["image"]
    assert image != "arvo-service", "the overlay names its registry image"
    assert ":" in image.rsplit("/", 1)[-1], image
    assert not image.endswith(":latest")


@pytest.mark.parametrize("directory", DIRECTORIES, ids=IDS)
def test_settings_from_configmap_secret_and_env_are_valid(directory: Path) -> None:
    resources = rendered(directory)
    _settings(resources)  # raises SettingsError naming the variable otherwise
    names = {resource["metadata"]["name"] for resource in resources}
    for source in _container(resources)["envFrom"]:
        reference = source.get("configMapRef") or source.get("secretRef")
        assert reference["name"] in names, f"envFrom references a missing object {reference['name']}"


@pytest.mark.parametrize("directory", DIRECTORIES, ids=IDS)
def test_secret_settings_are_never_in_the_configmap(directory: Path) -> None:
    resources = rendered(directory)
    secret_fields = {"ARVO_REDIS_URL", "ARVO_KAFKA_SASL_PASSWORD", "ARVO_KAFKA_SSL_KEY_PASSWORD"}
    assert not secret_fields & set(_one(resources, "ConfigMap")["data"])
    assert "ARVO_REDIS_URL" in _one(resources, "Secret")["stringData"]


@pytest.mark.parametrize("directory", DIRECTORIES, ids=IDS)
def test_probes_use_the_health_port_and_endpoints(directory: Path) -> None:
    resources = rendered(directory)
    container = _container(resources)
    port = _settings(resources).health_port
    ports = {item["name"]: item["containerPort"] for item in container["ports"]}
    assert ports == {"http": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = _one(resources, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    template = _one(resources, "Deployment")["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)


@pytest.mark.parametrize("directory", DIRECTORIES, ids=IDS)
def test_termination_grace_period_covers_the_drain_timeout(directory: Path) -> None:
    resources = rendered(directory)
    drain = _settings(resources).drain_timeout_s
    pod = _one(resources, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= drain + DRAIN_MARGIN_S
    assert "lifecycle" not in _container(resources), "no preStop: nothing routes traffic to the pods"


@pytest.mark.parametrize("directory", DIRECTORIES, ids=IDS)
def test_pods_meet_the_restricted_pod_security_standard(directory: Path) -> None:
    resources = rendered(directory)
    pod = _one(resources, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    assert all("hostPath" not in volume for volume in pod.get("volumes", []))
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context.get("privileged", False) is False
        assert "resources" in container
        assert {"requests", "limits"} <= set(container["resources"])
    # The uid matches the image's USER, so the image also runs without the pod-level override.
    uid = dockerfile_instructions("USER")[-1].split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == uid


@pytest.mark.parametrize("directory", DIRECTORIES, ids=IDS)
def test_service_account_has_no_token_and_no_rights(directory: Path) -> None:
    resources = rendered(directory)
    account = _one(resources, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    pod = _one(resources, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} & {r["kind"] for r in resources}


@pytest.mark.parametrize("directory", DIRECTORIES, ids=IDS)
def test_selectors_of_service_pdb_and_hpa_point_at_the_deployment(directory: Path) -> None:
    resources = rendered(directory)
    deployment = _one(resources, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert _one(resources, "Service")["spec"]["selector"].items() <= pod_labels.items()
    assert _one(resources, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    target = _one(resources, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])


@pytest.mark.parametrize("directory", DIRECTORIES, ids=IDS)
def test_scaling_bounds_fit_the_partitions_and_the_disruption_budget(directory: Path) -> None:
    resources = rendered(directory)
    spec = _one(resources, "HorizontalPodAutoscaler")["spec"]
    settings = _settings(resources)
    assert spec["maxReplicas"] <= settings.topic_partitions, "members beyond the partition count idle"
    assert spec["minReplicas"] >= 2, "one pod may be evicted (PDB) while another keeps consuming"
    assert _one(resources, "Deployment")["spec"]["replicas"] == spec["minReplicas"]
    assert _one(resources, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_example_overlay_namespace_enforces_the_restricted_profile() -> None:
    namespace = _one(rendered(K8S_DIR / "overlays" / "example"), "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --------------------------------------------------------------------------- the renderer itself


def _write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: main
          image: example/app:1.0
          env: [{name: X, value: "1"}]
        - name: side
          image: other:2
"""


def test_renderer_merges_containers_by_name_and_applies_json6902_images_and_namespace(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "deployment.yaml": DEPLOYMENT,
            "patch.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  template:\n"
            "    spec:\n      containers:\n        - name: main\n          env: [{name: Y, value: '2'}]\n",
            "kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            "namespace: ns\nresources: [deployment.yaml]\nimages: [{name: example/app, newTag: '2.0'}]\n"
            "labels: [{pairs: {team: t}, includeSelectors: true}]\n"
            "patches:\n  - path: patch.yaml\n  - target: {kind: Deployment, name: app}\n"
            "    patch: '[{op: replace, path: /spec/template/spec/containers/1/image, value: other:3}]'\n",
        },
    )
    (deployment,) = render(tmp_path)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["main", "side"]
    assert containers[0]["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    assert containers[0]["image"] == "example/app:2.0"
    assert containers[1]["image"] == "other:3"
    assert deployment["metadata"]["namespace"] == "ns"
    assert deployment["spec"]["selector"]["matchLabels"] == {"a": "b", "team": "t"}


def test_renderer_refuses_features_it_does_not_implement(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "deployment.yaml": DEPLOYMENT,
            "kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            "resources: [deployment.yaml]\nconfigMapGenerator: [{name: x, literals: [A=1]}]\n",
        },
    )
    with pytest.raises(KustomizeError, match="configMapGenerator"):
        render(tmp_path)


def test_renderer_fails_when_a_patch_matches_nothing(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "deployment.yaml": DEPLOYMENT,
            "patch.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: typo}\nspec: {replicas: 3}\n",
            "kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            "resources: [deployment.yaml]\npatches: [{path: patch.yaml}]\n",
        },
    )
    with pytest.raises(KustomizeError, match="matches no resource"):
        render(tmp_path)
