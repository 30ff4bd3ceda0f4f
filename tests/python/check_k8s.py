"""Checks deploy/k8s without a cluster: every manifest parses as YAML and carries the fields its
kind requires, and the manifests agree with each other and with Herald.

What it checks, for each manifest (kubeconform is not installable from the registries CI reaches,
so this is the schema test, for the kinds deploy/k8s uses):
- every document has apiVersion, kind and metadata.name, and its kind is one this file knows;
- Deployment: the selector matches the pod template's labels; every container has a name and an
  image; readiness probes /readyz and liveness probes /healthz, on ports the container declares;
  CPU and memory requests; terminationGracePeriodSeconds covers the preStop sleep plus Herald's
  shutdown.readiness_delay_ms and shutdown.grace_secs (read from the ConfigMap's herald.toml);
  every HERALD_* variable is one Herald knows (api/src/config/raw.rs) and every secretKeyRef names
  a Secret and key of the examples; the ConfigMap it mounts exists;
- ConfigMap herald-config: herald.toml parses as TOML and uses only keys Herald knows;
- Service: its selector matches the Deployment's pods, its target ports are container ports;
- Ingress: its backend is the Service, on a port the Service has;
- PodDisruptionBudget: its selector matches the Deployment's pods;
- HorizontalPodAutoscaler: scaleTargetRef names the Deployment, min <= max, and its Pods metric
  is one Herald exports and the adapter rule serves;
- ServiceMonitor: its selector matches the Service's labels, its endpoint ports are the
  Service's port names;
- kustomization.yaml: every resource exists;
- the Redis URLs of the Secrets use a scheme Herald accepts.

With `--herald PATH`, also runs `herald --check-config` on the ConfigMap's herald.toml with the
example Secrets' values, once per Redis URL example: Herald itself accepts the configuration.

Usage: python check_k8s.py [--herald target/debug/herald]   (exit 1 listing every problem)
"""

import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"

# Fields each kind must have, as dotted paths, beyond apiVersion, kind and metadata.name.
REQUIRED = {
    "Deployment": ["spec.selector.matchLabels", "spec.template.metadata.labels",
                   "spec.template.spec.containers", "spec.template.spec.terminationGracePeriodSeconds"],
    "Service": ["spec.selector", "spec.ports"],
    "ConfigMap": ["data"],
    "Secret": [],
    "Ingress": ["spec.rules"],
    "PodDisruptionBudget": ["spec.selector.matchLabels"],
    "HorizontalPodAutoscaler": ["spec.scaleTargetRef.kind", "spec.scaleTargetRef.name",
                                "spec.maxReplicas", "spec.metrics"],
    "ServiceMonitor": ["spec.selector.matchLabels", "spec.endpoints"],
    "Kustomization": ["resources"],
}
API_VERSIONS = {
    "Deployment": "apps/v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Ingress": "networking.k8s.io/v1",
    "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
}
REDIS_SCHEMES = ("redis://", "redis-sentinel://", "redis-cluster://")

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def get(doc, path):
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def herald_keys():
    """Every configuration key Herald knows, from api/src/config/raw.rs's KEYS table."""
    raw = (ROOT / "api" / "src" / "config" / "raw.rs").read_text()
    table = raw[raw.index("pub(crate) const KEYS"):]
    table = table[: table.index("];")]
    return set(re.findall(r'\("([a-z_.]+)", Kind::', table))


def toml_keys(table, prefix=""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from toml_keys(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            yield f"{prefix}{key}"  # [[sites]]: checked by Herald itself with --herald
        else:
            yield f"{prefix}{key}"


def load():
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        where = str(path.relative_to(ROOT))
        try:
            loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as error:
            problem(where, f"not YAML: {error}")
            continue
        if not loaded:
            problem(where, "no document")
        for doc in loaded:
            docs.append((where, doc))
    return docs


def check_common(where, doc):
    kind = doc.get("kind")
    if kind not in REQUIRED:
        problem(where, f"kind {kind!r} is not one this check knows")
        return False
    if doc.get("apiVersion") != API_VERSIONS[kind]:
        problem(where, f"{kind} has apiVersion {doc.get('apiVersion')!r}, not {API_VERSIONS[kind]}")
    if kind != "Kustomization" and not get(doc, "metadata.name"):
        problem(where, f"{kind} without metadata.name")
    for field in REQUIRED[kind]:
        if get(doc, field) in (None, "", [], {}):
            problem(where, f"{kind} {get(doc, 'metadata.name')} lacks {field}")
    return True


def main():
    herald = None
    if len(sys.argv) == 3 and sys.argv[1] == "--herald":
        herald = sys.argv[2]
    elif len(sys.argv) != 1:
        sys.exit(__doc__)

    docs = [(w, d) for w, d in load() if check_common(w, d)]
    by_kind = {}
    for where, doc in docs:
        by_kind.setdefault(doc["kind"], []).append((where, doc))
    known = herald_keys()
    if len(known) < 50:
        problem("api/src/config/raw.rs", f"read only {len(known)} keys from KEYS: did it move?")

    # --- the ConfigMap's herald.toml -------------------------------------------------------------
    config = {}
    configmaps = {get(d, "metadata.name"): (w, d) for w, d in by_kind.get("ConfigMap", [])}
    if "herald-config" not in configmaps:
        problem("deploy/k8s", "no ConfigMap herald-config")
    else:
        where, doc = configmaps["herald-config"]
        try:
            config = tomllib.loads(doc["data"]["herald.toml"])
        except (KeyError, tomllib.TOMLDecodeError) as error:
            problem(where, f"herald.toml missing or not TOML: {error}")
        for key in toml_keys(config):
            if key not in known and key != "sites":
                problem(where, f"herald.toml key {key} is not one Herald knows")

    # --- Secrets (the examples, in whichever file) -------------------------------------------------
    secrets = {}
    for where, doc in by_kind.get("Secret", []):
        data = doc.get("stringData") or {}
        secrets.setdefault(get(doc, "metadata.name"), set()).update(data)
        url = data.get("redis-url")
        if url is not None and not url.startswith(REDIS_SCHEMES):
            problem(where, f"redis-url {url!r} is not redis://, redis-sentinel:// or redis-cluster://")

    # --- Deployment ------------------------------------------------------------------------------
    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        problem("deploy/k8s", f"expected one Deployment, found {len(deployments)}")
        deployment_name, pod_labels, container_ports = None, {}, set()
    else:
        where, doc = deployments[0]
        deployment_name = get(doc, "metadata.name")
        pod_labels = get(doc, "spec.template.metadata.labels") or {}
        if not matches(get(doc, "spec.selector.matchLabels"), pod_labels):
            problem(where, "spec.selector.matchLabels does not match the pod template's labels")
        pod = get(doc, "spec.template.spec") or {}
        container_ports = set()
        for container in pod.get("containers") or []:
            name = container.get("name") or "?"
            if not container.get("name") or not container.get("image"):
                problem(where, f"container {name} lacks a name or an image")
            ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
            container_ports |= set(ports)
            for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
                action = get(container, f"{probe}.httpGet") or {}
                if action.get("path") != path:
                    problem(where, f"container {name}: {probe} must GET {path}, not {action.get('path')!r}")
                port = action.get("port")
                if port not in ports and port not in ports.values():
                    problem(where, f"container {name}: {probe} port {port!r} is not a container port")
            for resource in ["cpu", "memory"]:
                if not get(container, f"resources.requests.{resource}"):
                    problem(where, f"container {name} has no {resource} request")
            for env in container.get("env") or []:
                var = env.get("name", "")
                if var.startswith("HERALD_") and var != "HERALD_CONFIG":
                    if var not in {"HERALD_" + k.replace(".", "_").upper() for k in known}:
                        problem(where, f"{var} is not a variable Herald knows")
                ref = get(env, "valueFrom.secretKeyRef")
                if ref and ref.get("key") not in secrets.get(ref.get("name"), set()):
                    problem(where, f"{var} reads Secret {ref.get('name')} key {ref.get('key')}, "
                                   "which no example Secret has")
            for volume in pod.get("volumes") or []:
                cm = get(volume, "configMap.name")
                if cm and cm not in configmaps:
                    problem(where, f"volume {volume.get('name')} mounts ConfigMap {cm}, which is not here")
            sleep = get(container, "lifecycle.preStop.sleep.seconds")
            if sleep is None:
                problem(where, f"container {name} has no preStop sleep")
                sleep = 0
            shutdown = config.get("shutdown", {})
            # Herald's defaults (docs/configuration.md) where herald.toml leaves them out.
            needed = sleep + shutdown.get("readiness_delay_ms", 2000) / 1000 + shutdown.get("grace_secs", 10)
            grace = pod.get("terminationGracePeriodSeconds") or 0
            if grace < needed:
                problem(where, f"terminationGracePeriodSeconds {grace} is under preStop sleep + "
                               f"readiness delay + grace = {needed:g} s")

    # --- Service, Ingress, PDB, HPA, ServiceMonitor ----------------------------------------------
    services = {get(d, "metadata.name"): (w, d) for w, d in by_kind.get("Service", [])}
    for name, (where, doc) in services.items():
        if not matches(get(doc, "spec.selector"), pod_labels):
            problem(where, f"Service {name}'s selector does not match the Deployment's pods")
        for port in get(doc, "spec.ports") or []:
            if not port.get("name"):
                problem(where, f"Service {name} has a port without a name")
            target = port.get("targetPort")
            if isinstance(target, str) and target not in container_ports:
                problem(where, f"Service {name} targets port {target}, which no container declares")

    for where, doc in by_kind.get("Ingress", []):
        for rule in get(doc, "spec.rules") or []:
            for path in get(rule, "http.paths") or []:
                service = get(path, "backend.service.name")
                port = get(path, "backend.service.port.name")
                if service not in services:
                    problem(where, f"Ingress backend {service} is not a Service here")
                elif port not in {p.get("name") for p in get(services[service][1], "spec.ports")}:
                    problem(where, f"Ingress backend port {port} is not a port of Service {service}")

    for where, doc in by_kind.get("PodDisruptionBudget", []):
        if not matches(get(doc, "spec.selector.matchLabels"), pod_labels):
            problem(where, "PodDisruptionBudget's selector does not match the Deployment's pods")
        if get(doc, "spec.minAvailable") is None and get(doc, "spec.maxUnavailable") is None:
            problem(where, "PodDisruptionBudget has neither minAvailable nor maxUnavailable")

    adapter = " ".join(d.get("data", {}).get("config.yaml", "") for _, d in configmaps.values())
    for where, doc in by_kind.get("HorizontalPodAutoscaler", []):
        ref = get(doc, "spec.scaleTargetRef")
        if ref.get("kind") != "Deployment" or ref.get("name") != deployment_name:
            problem(where, f"HPA scales {ref.get('kind')}/{ref.get('name')}, not the Deployment")
        if (get(doc, "spec.minReplicas") or 1) > get(doc, "spec.maxReplicas"):
            problem(where, "HPA minReplicas > maxReplicas")
        for metric in get(doc, "spec.metrics") or []:
            name = get(metric, "pods.metric.name")
            if metric.get("type") == "Pods" and not (name and name.startswith("herald_") and name in adapter):
                problem(where, f"HPA Pods metric {name} is not served by the adapter rule")

    for where, doc in by_kind.get("ServiceMonitor", []):
        selected = [d for _, d in services.values()
                    if matches(get(doc, "spec.selector.matchLabels"), get(d, "metadata.labels") or {})]
        if not selected:
            problem(where, "ServiceMonitor's selector matches no Service's labels")
        names = {p.get("name") for d in selected for p in get(d, "spec.ports") or []}
        for endpoint in get(doc, "spec.endpoints") or []:
            if endpoint.get("port") not in names:
                problem(where, f"ServiceMonitor port {endpoint.get('port')} is not a Service port name")

    for where, doc in by_kind.get("Kustomization", []):
        for resource in doc.get("resources") or []:
            if not (K8S / resource).is_file():
                problem(where, f"resource {resource} does not exist")

    # --- Herald's own verdict on the configuration ---------------------------------------------
    if herald and config:
        base = {
            "HERALD_PUBLISH_SECRET": "a-publish-secret-for-the-check",
            "HERALD_ADMIN_SECRET": "an-admin-secret-for-the-check",
        }
        urls = sorted({(w, get(d, "stringData.redis-url")) for w, d in by_kind.get("Secret", [])
                       if get(d, "stringData.redis-url")})
        with tempfile.TemporaryDirectory() as folder:
            file = Path(folder) / "herald.toml"
            file.write_text(configmaps["herald-config"][1]["data"]["herald.toml"])
            for where, url in urls:
                env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
                env.update(base, HERALD_REDIS_URL=url)
                run = subprocess.run([herald, "--config", str(file), "--check-config"],
                                     env=env, capture_output=True, text=True, timeout=30)
                if run.returncode != 0:
                    problem(where, f"herald --check-config refuses it: {run.stderr.strip()}")

    checked = sum(len(v) for v in by_kind.values())
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"check_k8s: {checked} manifests in deploy/k8s are complete and agree"
          + (" (and herald --check-config accepts them)" if herald else ""))


if __name__ == "__main__":
    main()
