"""A small, strict kustomize renderer for the offline checks of ``deploy/k8s`` (no kustomize binary here).

It implements exactly the kustomization features the repository uses, and rejects every other key,
so an overlay that starts using something else fails loudly instead of being checked wrongly:

* ``resources``: YAML files (several documents each) and directories holding a kustomization;
* ``namespace``: set on every namespaced resource;
* ``labels`` (``pairs``, ``includeSelectors``, ``includeTemplates``) and ``commonLabels`` (which, as in
  kustomize, also goes into selectors and pod templates);
* ``images`` (``name``, ``newName``, ``newTag``, ``digest``) on the containers of pod templates;
* ``patches``: from a ``path`` or an inline ``patch``; a YAML list of operations is a JSON 6902 patch
  (``add``/``replace``/``remove``) applied to the resources matching ``target`` (kind, name), anything
  else a strategic-merge patch matched by kind and name.

Strategic merge follows Kubernetes for the fields used here: maps merge recursively; lists of maps
merge item by item on their merge key (``name`` for containers, env, volumes and ports by
``containerPort``, volume mounts by ``mountPath``); other lists are replaced. Transformations run in
kustomize's order for these features: resources, patches, then namespace, labels and images.
The authority stays ``kubectl kustomize``; this renderer exists so CI can validate without it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KustomizeError", "render"]

Resource = dict[str, Any]

_SUPPORTED_KEYS = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "labels", "commonLabels", "images", "patches"}
)
_CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)
_WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
_MERGE_KEYS = {"volumeMounts": "mountPath", "ports": "containerPort"}


class KustomizeError(ValueError):
    """The kustomization uses an unsupported feature or does not apply to its resources."""


def _load_documents(path: Path) -> list[Resource]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in documents:
        if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
            raise KustomizeError(f"{path}: every document must be a Kubernetes object (apiVersion, kind)")
    return documents


def _identity(resource: Resource) -> tuple[str, str]:
    return resource["kind"], resource.get("metadata", {}).get("name", "")


def _merge(base: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge of ``patch`` into ``base`` (see the module docstring for the subset)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            if key.startswith("$patch"):
                raise KustomizeError(f"strategic-merge directive {key!r} is not supported")
            merged[key] = _merge(base[key], value, key) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list):
        key = _MERGE_KEYS.get(field, "name")
        if all(isinstance(item, dict) and key in item for item in [*base, *patch]):
            merged_list = [copy.deepcopy(item) for item in base]
            positions = {item[key]: index for index, item in enumerate(merged_list)}
            for item in patch:
                if item[key] in positions:
                    index = positions[item[key]]
                    merged_list[index] = _merge(merged_list[index], item, field)
                else:
                    merged_list.append(copy.deepcopy(item))
            return merged_list
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON 6902 path {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _apply_operation(resource: Resource, operation: dict[str, Any]) -> None:
    op = operation.get("op")
    parts = _pointer(str(operation.get("path", "")))
    parent: Any = resource
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if op in ("add", "replace"):
        if isinstance(parent, list):
            if last == "-":
                parent.append(copy.deepcopy(operation["value"]))
            elif op == "add":
                parent.insert(int(last), copy.deepcopy(operation["value"]))
            else:
                parent[int(last)] = copy.deepcopy(operation["value"])
        else:
            if op == "replace" and last not in parent:
                raise KustomizeError(f"JSON 6902 replace of missing {operation['path']!r}")
            parent[last] = copy.deepcopy(operation["value"])
    elif op == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise KustomizeError(f"JSON 6902 operation {op!r} is not supported (add, replace, remove)")


def _apply_patch(resources: list[Resource], entry: dict[str, Any], directory: Path) -> None:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown:
        raise KustomizeError(f"unsupported patch keys {sorted(unknown)} in {directory}")
    text = (directory / entry["path"]).read_text() if "path" in entry else entry["patch"]
    content = yaml.safe_load(text)
    target = entry.get("target") or {}
    if set(target) - {"kind", "name"}:
        raise KustomizeError(f"patch targets support kind and name only, got {sorted(target)}")
    if isinstance(content, list):
        if not target:
            raise KustomizeError("a JSON 6902 patch needs a target (kind, name)")
        matched = [
            resource
            for resource in resources
            if all(
                _identity(resource)[index] == target[key]
                for index, key in enumerate(("kind", "name"))
                if key in target
            )
        ]
        if not matched:
            raise KustomizeError(f"patch target {target} matches no resource")
        for resource in matched:
            for operation in content:
                _apply_operation(resource, operation)
        return
    if not isinstance(content, dict) or target:
        raise KustomizeError("a strategic-merge patch is one object and is matched by kind and name")
    wanted = _identity(content)
    for index, resource in enumerate(resources):
        if _identity(resource) == wanted:
            resources[index] = _merge(resource, content)
            return
    raise KustomizeError(f"strategic-merge patch {wanted} matches no resource")


def _pod_templates(resource: Resource) -> Iterator[dict[str, Any]]:
    if resource["kind"] in _WORKLOAD_KINDS:
        yield resource.setdefault("spec", {}).setdefault("template", {})
    elif resource["kind"] == "CronJob":
        yield resource["spec"]["jobTemplate"]["spec"]["template"]


def _add_labels(resource: Resource, pairs: dict[str, str], *, selectors: bool, templates: bool) -> None:
    resource.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    if templates or selectors:
        for template in _pod_templates(resource):
            template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    if selectors:
        spec = resource.get("spec", {})
        if resource["kind"] == "Service":
            spec.setdefault("selector", {}).update(pairs)
        elif resource["kind"] in _WORKLOAD_KINDS or resource["kind"] == "PodDisruptionBudget":
            spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def _set_images(resource: Resource, images: list[dict[str, str]]) -> None:
    for template in _pod_templates(resource):
        spec = template.get("spec", {})
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            name, tag, digest = _split_image(container["image"])
            for image in images:
                if set(image) - {"name", "newName", "newTag", "digest"}:
                    raise KustomizeError(f"unsupported image keys in {image}")
                if image["name"] != name:
                    continue
                new_name = image.get("newName", name)
                new_tag = image.get("newTag", tag)
                new_digest = image.get("digest", digest)
                container["image"] = (
                    new_name + (f":{new_tag}" if new_tag else "") + (f"@{new_digest}" if new_digest else "")
                )


def render(directory: Path) -> list[Resource]:
    """Render the kustomization in ``directory`` into the list of resources it produces."""
    kustomization_file = directory / "kustomization.yaml"
    if not kustomization_file.is_file():
        raise KustomizeError(f"{directory} has no kustomization.yaml")
    kustomization = yaml.safe_load(kustomization_file.read_text())
    unknown = set(kustomization) - _SUPPORTED_KEYS
    if unknown:
        raise KustomizeError(f"{kustomization_file}: unsupported kustomization keys {sorted(unknown)}")
    if kustomization.get("kind") != "Kustomization":
        raise KustomizeError(f"{kustomization_file}: kind must be Kustomization")

    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        resources.extend(render(path) if path.is_dir() else _load_documents(path))
    identities = [
        (*_identity(resource), resource.get("metadata", {}).get("namespace")) for resource in resources
    ]
    if len(set(identities)) != len(identities):
        raise KustomizeError(f"{kustomization_file}: the same resource is listed twice")

    for entry in kustomization.get("patches", []):
        _apply_patch(resources, entry, directory)

    namespace = kustomization.get("namespace")
    for resource in resources:
        if namespace and resource["kind"] not in _CLUSTER_SCOPED_KINDS:
            resource.setdefault("metadata", {})["namespace"] = namespace
        for label in kustomization.get("labels", []):
            if set(label) - {"pairs", "includeSelectors", "includeTemplates"}:
                raise KustomizeError(f"unsupported labels keys in {label}")
            _add_labels(
                resource,
                label["pairs"],
                selectors=bool(label.get("includeSelectors", False)),
                templates=bool(label.get("includeTemplates", False)),
            )
        if kustomization.get("commonLabels"):
            _add_labels(resource, kustomization["commonLabels"], selectors=True, templates=True)
        _set_images(resource, kustomization.get("images", []))
    return resources
