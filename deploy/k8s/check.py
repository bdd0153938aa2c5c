#!/usr/bin/env python3
"""Checks the Kubernetes manifests of this directory for what their schema
cannot say (the schema itself is checked by kubernetes-validate).

    python3 deploy/k8s/check.py [DIR] [--plan FILE]

Prints one line per problem and exits 1, or prints a summary and exits 0.
With --plan, also writes FILE: a JSON description of the coordinator's and
the agents' containers (config, environment, mounts) that
coordinator/tests/it/deploy.rs uses to run the real binaries the way the
manifests would. Needs PyYAML (installed with kubernetes-validate).
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

# Files of DIR that are not in kustomization.yaml on purpose.
OPTIONAL = {"servicemonitor.yaml"}
REGIONS = {"eu", "us", "ap"}
REGION_LABEL = "vantage.dev/region"
AGENT_LABEL = "vantage.dev/agent"
# Environment variables whose value is a secret: only from a Secret.
SECRET_ENV = re.compile(r"TOKEN|PASSWORD|SECRET|WEBHOOK|CREDENTIAL|(^|_)KEY$")
# Config keys that hold a secret: only { env = ... } or { file = ... }.
SECRET_KEYS = {"token", "password", "webhook_url"}


class Checker:
    def __init__(self, root: Path):
        self.root = root
        self.problems = []
        self.passed = 0

    def check(self, ok, message):
        if ok:
            self.passed += 1
        else:
            self.problems.append(message)
        return ok


def load_docs(path: Path):
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def where(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def pod_spec(doc):
    return doc["spec"]["template"]["spec"]


def pod_labels(doc):
    return doc["spec"]["template"].get("metadata", {}).get("labels", {})


def env_map(container):
    return {e["name"]: e for e in container.get("env", [])}


def secret_ref(env):
    ref = (env or {}).get("valueFrom", {}).get("secretKeyRef")
    return (ref["name"], ref["key"]) if ref else None


def under(path, mount):
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def mount_for(container, spec, path):
    """The (volumeMount, volume) that holds `path`, the longest match."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    best = None
    for m in container.get("volumeMounts", []):
        if under(path, m["mountPath"]):
            if best is None or len(m["mountPath"]) > len(best[0]["mountPath"]):
                best = (m, volumes.get(m["name"]))
    return best


def port_number(container, port):
    for p in container.get("ports", []):
        if port in (p.get("name"), p.get("containerPort")):
            return p["containerPort"]
    return None


def listen_port(addr):
    return int(addr.rsplit(":", 1)[1])


def check_pod(c: Checker, doc):
    """Rules for every pod template: security, resources, probes, secrets."""
    w = where(doc)
    spec = pod_spec(doc)
    pod_sc = spec.get("securityContext", {})
    c.check(
        spec.get("automountServiceAccountToken") is False,
        f"{w}: automountServiceAccountToken must be false (no API access needed)",
    )
    volumes = {v["name"] for v in spec.get("volumes", [])}
    volumes |= {
        t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])
    }
    for ctr in spec.get("containers", []) + spec.get("initContainers", []):
        cw = f"{w} container {ctr['name']}"
        sc = ctr.get("securityContext", {})

        def setting(key):
            return sc[key] if key in sc else pod_sc.get(key)

        c.check(setting("runAsNonRoot") is True, f"{cw}: runAsNonRoot must be true")
        uid = setting("runAsUser")
        c.check(
            isinstance(uid, int) and uid > 0,
            f"{cw}: runAsUser must be a non-root uid, is {uid!r}",
        )
        c.check(
            sc.get("allowPrivilegeEscalation") is False,
            f"{cw}: allowPrivilegeEscalation must be false",
        )
        c.check(
            sc.get("readOnlyRootFilesystem") is True,
            f"{cw}: readOnlyRootFilesystem must be true",
        )
        c.check(
            "ALL" in sc.get("capabilities", {}).get("drop", []),
            f"{cw}: capabilities must drop ALL",
        )
        c.check(
            not sc.get("capabilities", {}).get("add"),
            f"{cw}: must add no capability",
        )
        seccomp = setting("seccompProfile") or {}
        c.check(
            seccomp.get("type") == "RuntimeDefault",
            f"{cw}: seccompProfile must be RuntimeDefault",
        )
        res = ctr.get("resources", {})
        for kind, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
            for key in keys:
                c.check(
                    key in res.get(kind, {}),
                    f"{cw}: resources.{kind}.{key} missing",
                )
        if ctr in spec.get("containers", []):
            for probe in ("livenessProbe", "readinessProbe"):
                p = ctr.get(probe)
                if not c.check(p is not None, f"{cw}: {probe} missing"):
                    continue
                get = p.get("httpGet")
                if get:
                    c.check(
                        port_number(ctr, get["port"]) is not None,
                        f"{cw}: {probe} port {get['port']!r} is not a container port",
                    )
        for e in ctr.get("env", []):
            if SECRET_ENV.search(e["name"]) and not e["name"].endswith("_FILE"):
                c.check(
                    secret_ref(e) is not None,
                    f"{cw}: env {e['name']} holds a secret: it must come from a "
                    "Secret (valueFrom.secretKeyRef), never a literal value",
                )
        for m in ctr.get("volumeMounts", []):
            c.check(
                m["name"] in volumes,
                f"{cw}: volumeMount {m['name']} has no volume",
            )


def config_secret_refs(c: Checker, node, path=""):
    """Every secret in the coordinator's config is { env } or { file }: returns
    the env names."""
    envs = []
    if isinstance(node, dict):
        for key, value in node.items():
            p = f"{path}.{key}" if path else key
            # ([[api.token]] is a list of tables named `token`.)
            secretish = not isinstance(value, list) and (
                key in SECRET_KEYS
                or (key == "url" and node.get("kind") == "webhook")
            )
            if secretish:
                ok = isinstance(value, dict) and set(value) in ({"env"}, {"file"})
                c.check(
                    ok,
                    f"ConfigMap coordinator.toml: {p} holds a secret: use "
                    '{ env = "VAR" } (from a Secret), never the value itself',
                )
                if ok and "env" in value:
                    envs.append(value["env"])
            else:
                envs += config_secret_refs(c, value, p)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            envs += config_secret_refs(c, item, f"{path}[{i}]")
    return envs


def describe(container, spec, env_overrides=None):
    """The plan of one container: env (values, Secret references) and mounts."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = {"value": e["value"]}
        elif secret_ref(e):
            env[e["name"]] = {"secret": list(secret_ref(e))}
    env.update(env_overrides or {})
    mounts = []
    for m in container.get("volumeMounts", []):
        v = volumes.get(m["name"], {})
        if "configMap" in v:
            kind, name = "configMap", v["configMap"]["name"]
        elif "secret" in v:
            kind, name = "secret", v["secret"]["secretName"]
        elif "emptyDir" in v:
            kind, name = "emptyDir", m["name"]
        else:
            kind, name = "volumeClaim", m["name"]
        mounts.append(
            {
                "path": m["mountPath"],
                "kind": kind,
                "name": name,
                "read_only": bool(m.get("readOnly")),
            }
        )
    return {"args": container.get("args", []), "env": env, "mounts": mounts}


def main(argv):
    args = list(argv)
    plan_file = None
    if "--plan" in args:
        i = args.index("--plan")
        plan_file = Path(args[i + 1])
        del args[i : i + 2]
    root = Path(args[0]) if args else Path(__file__).parent
    c = Checker(root)

    kust = yaml.safe_load((root / "kustomization.yaml").read_text())
    listed = kust.get("resources", [])
    on_disk = {p.name for p in root.glob("*.yaml")} - {"kustomization.yaml"}
    c.check(
        set(listed) == on_disk - OPTIONAL,
        f"kustomization.yaml lists {sorted(listed)}, the directory has "
        f"{sorted(on_disk - OPTIONAL)} (besides {sorted(OPTIONAL)})",
    )
    c.check(
        not (set(listed) & OPTIONAL),
        f"kustomization.yaml must leave out {sorted(OPTIONAL)} (needs CRDs)",
    )
    docs = [d for name in listed for d in load_docs(root / name)]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    namespaces = [d["metadata"]["name"] for d in by_kind.get("Namespace", [])]
    c.check(len(namespaces) == 1, f"one Namespace expected, found {namespaces}")
    ns = namespaces[0] if namespaces else None
    for d in docs:
        if d["kind"] != "Namespace":
            c.check(
                d["metadata"].get("namespace") == ns,
                f"{where(d)}: namespace must be {ns}",
            )
    c.check(
        "Secret" not in by_kind,
        "no Secret may be in the manifests: secrets are created apart "
        "(kubectl create secret), never committed",
    )
    for d in docs:
        if d["kind"] in ("StatefulSet", "Deployment"):
            check_pod(c, d)

    # The coordinator: StatefulSet, its config and its Service.
    sts = [d for d in by_kind.get("StatefulSet", [])]
    if not c.check(len(sts) == 1, "one StatefulSet (the coordinator) expected"):
        return report(c)
    sts = sts[0]
    spec = pod_spec(sts)
    ctr = spec["containers"][0]
    c.check(sts["spec"].get("replicas") == 1, f"{where(sts)}: replicas must be 1")
    args = ctr.get("args", [])
    config_path = None
    if "--config" in args:
        config_path = args[args.index("--config") + 1]
    elif "VANTAGE_CONFIG" in env_map(ctr):
        config_path = env_map(ctr)["VANTAGE_CONFIG"].get("value")
    if not c.check(config_path, f"{where(sts)}: no --config / VANTAGE_CONFIG"):
        return report(c)
    held = mount_for(ctr, spec, config_path)
    cm_name = (held[1] or {}).get("configMap", {}).get("name") if held else None
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    key = Path(config_path).name
    ok = cm_name in configmaps and key in configmaps[cm_name].get("data", {})
    if not c.check(
        ok, f"{where(sts)}: {config_path} is not a key of a ConfigMap mounted there"
    ):
        return report(c)
    c.check(
        Path(config_path).parent.as_posix() == held[0]["mountPath"],
        f"{where(sts)}: mount the ConfigMap as a directory (no subPath), so "
        "its updates reach the pod",
    )
    text = configmaps[cm_name]["data"][key]
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        c.check(False, f"ConfigMap {cm_name}: {key} is not TOML: {e}")
        return report(c)
    server = config.get("server", {})
    env = env_map(ctr)

    # Secrets in the config come from the environment, which comes from
    # Secrets.
    for name in config_secret_refs(c, config):
        c.check(
            secret_ref(env.get(name)) is not None,
            f"{where(sts)}: the config reads {name}, which must be set from a "
            "Secret (valueFrom.secretKeyRef)",
        )

    # The store on the claim template's volume.
    data_dir = server.get("data_dir", "")
    templates = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    c.check(templates, f"{where(sts)}: no volumeClaimTemplates for the store")
    held = mount_for(ctr, spec, data_dir) if data_dir.startswith("/") else None
    c.check(
        held is not None and held[0]["name"] in templates and not held[0].get("readOnly"),
        f"{where(sts)}: data_dir {data_dir!r} must be an absolute path on a "
        "volumeClaimTemplate's mount",
    )

    # TLS: the files on a Secret's mount, probes speak HTTPS.
    tls = server.get("tls")
    for k in ("cert_file", "key_file"):
        path = (tls or {}).get(k, "")
        held = mount_for(ctr, spec, path) if path.startswith("/") else None
        c.check(
            held is not None and "secret" in (held[1] or {}),
            f"{where(sts)}: server.tls.{k} {path!r} must be on a Secret's mount",
        )
    http_port = listen_port(server.get("http_listen", "127.0.0.1:7080"))
    grpc_port = listen_port(server.get("grpc_listen", "127.0.0.1:7070"))
    for probe in ("livenessProbe", "readinessProbe"):
        get = (ctr.get(probe) or {}).get("httpGet", {})
        c.check(
            get.get("path") == "/healthz"
            and port_number(ctr, get.get("port")) == http_port
            and get.get("scheme") == ("HTTPS" if tls else "HTTP"),
            f"{where(sts)}: {probe} must GET /healthz on the HTTP API port "
            f"{http_port} with scheme {'HTTPS' if tls else 'HTTP'}",
        )

    services = by_kind.get("Service", [])
    svc = next(
        (
            s
            for s in services
            if s["spec"].get("selector")
            and all(pod_labels(sts).get(k) == v for k, v in s["spec"]["selector"].items())
        ),
        None,
    )
    if not c.check(svc is not None, "no Service selects the coordinator's pods"):
        return report(c)
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    for name, want in (("grpc", grpc_port), ("http", http_port)):
        p = svc_ports.get(name)
        c.check(
            p is not None and port_number(ctr, p.get("targetPort", p["port"])) == want,
            f"{where(svc)}: port {name} must lead to the coordinator's {want}",
        )
    c.check(
        sts["spec"].get("serviceName") == svc["metadata"]["name"],
        f"{where(sts)}: serviceName must be {svc['metadata']['name']}",
    )
    svc_host = f"{svc['metadata']['name']}.{ns}.svc"

    # The agents: one Deployment per region, wired to the coordinator.
    entries = {a["name"]: a for a in config.get("agent", [])}
    regions = set()
    agent_plans = []
    for dep in by_kind.get("Deployment", []):
        w = where(dep)
        labels = pod_labels(dep)
        spec = pod_spec(dep)
        actr = spec["containers"][0]
        aenv = env_map(actr)
        c.check(dep["spec"].get("replicas") == 1, f"{w}: replicas must be 1 (one pod per agent name)")
        c.check(
            dep["spec"].get("strategy", {}).get("type") == "Recreate",
            f"{w}: strategy must be Recreate (never two pods of one agent)",
        )
        resolved = {}
        for var, label in (("VANTAGE_REGION", REGION_LABEL), ("VANTAGE_AGENT_NAME", AGENT_LABEL)):
            field = aenv.get(var, {}).get("valueFrom", {}).get("fieldRef", {})
            ok = c.check(
                field.get("fieldPath") == f"metadata.labels['{label}']"
                and label in labels,
                f"{w}: {var} must come from the pod label {label} "
                "(valueFrom.fieldRef), and the pod must have that label",
            )
            if ok:
                resolved[var] = {"value": labels[label]}
        region = labels.get(REGION_LABEL)
        name = labels.get(AGENT_LABEL)
        regions.add(region)
        entry = entries.get(name)
        c.check(
            entry is not None and entry.get("region") == region,
            f"{w}: the coordinator's config has no [[agent]] {name!r} pinned to "
            f"region {region!r}",
        )
        token = secret_ref(aenv.get("VANTAGE_AGENT_TOKEN"))
        c.check(token is not None, f"{w}: VANTAGE_AGENT_TOKEN must come from a Secret")
        want = None
        if entry and isinstance(entry.get("token"), dict) and "env" in entry["token"]:
            want = secret_ref(env.get(entry["token"]["env"]))
        if entry and "sha256" not in entry:
            c.check(
                want is not None and token == want,
                f"{w}: its token {token} must be the Secret key the coordinator "
                f"reads for agent {name!r} ({want})",
            )
        url = aenv.get("VANTAGE_COORDINATOR", {}).get("value", "")
        c.check(
            url in (f"https://{svc_host}:{svc_ports['grpc']['port']}",
                    f"https://{svc_host}.cluster.local:{svc_ports['grpc']['port']}"),
            f"{w}: VANTAGE_COORDINATOR must be https://{svc_host}:"
            f"{svc_ports['grpc']['port']}, is {url!r}",
        )
        for var, writable in (("VANTAGE_CA_FILE", False), ("VANTAGE_SPOOL_DIR", True)):
            path = aenv.get(var, {}).get("value", "")
            held = mount_for(actr, spec, path) if path.startswith("/") else None
            c.check(
                held is not None and (not writable or not held[0].get("readOnly")),
                f"{w}: {var} {path!r} must be on a{' writable' if writable else ''} "
                "volume mount",
            )
        health = aenv.get("VANTAGE_HEALTH_LISTEN", {}).get("value", "")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = (actr.get(probe) or {}).get("httpGet", {})
            c.check(
                get.get("path") == path
                and health
                and port_number(actr, get.get("port")) == listen_port(health)
                and get.get("scheme", "HTTP") == "HTTP",
                f"{w}: {probe} must GET {path} over HTTP on the port of "
                f"VANTAGE_HEALTH_LISTEN ({health!r})",
            )
        plan = describe(actr, spec, resolved)
        plan["deployment"] = dep["metadata"]["name"]
        agent_plans.append(plan)
    c.check(regions == REGIONS, f"agent Deployments for regions {sorted(REGIONS)} expected, found {sorted(r or '?' for r in regions)}")

    monitor = root / "servicemonitor.yaml"
    if monitor.exists():
        check_servicemonitor(c, load_docs(monitor), ns, svc, svc_host, config, env)

    if plan_file and not c.problems:
        plan = {
            "coordinator": describe(ctr, pod_spec(sts)),
            "config_path": config_path,
            "configmaps": {n: d.get("data", {}) for n, d in configmaps.items()},
            "agents": agent_plans,
        }
        plan_file.write_text(json.dumps(plan, indent=2))
    return report(c)


def check_servicemonitor(c: Checker, docs, ns, svc, svc_host, config, env):
    """The ServiceMonitor is a CRD, outside the schema check: its fields here."""
    if not c.check(len(docs) == 1, "servicemonitor.yaml: one document expected"):
        return
    sm = docs[0]
    c.check(
        sm.get("apiVersion") == "monitoring.coreos.com/v1" and sm.get("kind") == "ServiceMonitor",
        "servicemonitor.yaml: must be a monitoring.coreos.com/v1 ServiceMonitor",
    )
    c.check(sm["metadata"].get("namespace") == ns, f"servicemonitor.yaml: namespace must be {ns}")
    selector = sm.get("spec", {}).get("selector", {}).get("matchLabels", {})
    labels = svc["metadata"].get("labels", {})
    c.check(
        selector and all(labels.get(k) == v for k, v in selector.items()),
        "servicemonitor.yaml: its selector must match the coordinator Service's labels",
    )
    endpoints = sm.get("spec", {}).get("endpoints", [])
    if not c.check(len(endpoints) == 1, "servicemonitor.yaml: one endpoint expected"):
        return
    ep = endpoints[0]
    c.check(
        ep.get("port") == "http" and any(p["name"] == "http" for p in svc["spec"]["ports"]),
        "servicemonitor.yaml: must scrape the Service's port named http",
    )
    c.check(ep.get("path") == "/metrics", "servicemonitor.yaml: path must be /metrics")
    tls = "tls" in config.get("server", {})
    c.check(
        ep.get("scheme") == ("https" if tls else "http"),
        "servicemonitor.yaml: scheme must be https (the coordinator serves TLS)",
    )
    cred = ep.get("authorization", {}).get("credentials") or ep.get("bearerTokenSecret")
    ref = (cred["name"], cred["key"]) if cred else None
    # The Secret key must be one the coordinator reads as an API token.
    api_envs = {
        t["token"]["env"]: t.get("role")
        for t in config.get("api", {}).get("token", [])
        if isinstance(t.get("token"), dict) and "env" in t["token"]
    }
    roles = [role for var, role in api_envs.items() if secret_ref(env.get(var)) == ref]
    c.check(
        ref is not None and roles and roles[0] in ("viewer", "admin"),
        f"servicemonitor.yaml: its bearer token {ref} must be a Secret key the "
        "coordinator reads as an [[api.token]]",
    )
    if tls:
        tc = ep.get("tlsConfig", {})
        c.check(
            "ca" in tc and tc.get("serverName") == svc_host,
            f"servicemonitor.yaml: tlsConfig needs the CA and serverName {svc_host}",
        )
        c.check(
            not tc.get("insecureSkipVerify"),
            "servicemonitor.yaml: must verify the coordinator's certificate",
        )


def report(c: Checker):
    for p in c.problems:
        print(f"FAIL {p}")
    if c.problems:
        print(f"{len(c.problems)} failed, {c.passed} passed")
        return 1
    print(f"{c.passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
