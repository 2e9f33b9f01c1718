"""The Kubernetes manifests, rendered by `kubectl kustomize`, against the API schemas that would admit them.

Built-in kinds go through kubernetes-validate (Kubernetes 1.30, strict: unknown fields are errors); the
Prometheus Operator's ServiceMonitor and PrometheusRule through the operator's own API schemas (npm
@kubernetes-models/prometheus-operator), plus a check of their field names against the same package's types.
The rest checks what a schema cannot: that the pieces fit each other (selectors, ports, names, timings).
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from .contract import contract_metrics
from .manifests import KUSTOMIZATIONS, Manifest, find, render
from .tools import REPO, require_tool

KUBERNETES_VERSION = "1.30.0"
OPERATOR_GROUP = "monitoring.coreos.com"
SERVER_OVERLAYS = ("k8s/overlays/cpu", "k8s/overlays/gpu")
JOBS = ("k8s/training", "k8s/training-multinode", "k8s/bulk")
OPERATOR_TYPES = REPO / ".tools" / "node_modules" / "@kubernetes-models" / "prometheus-operator"


def _builtin(manifests: list[Manifest]) -> list[Manifest]:
    return [doc for doc in manifests if not doc["apiVersion"].startswith(f"{OPERATOR_GROUP}/")]


def _operator(manifests: list[Manifest]) -> list[Manifest]:
    return [doc for doc in manifests if doc["apiVersion"].startswith(f"{OPERATOR_GROUP}/")]


def _kubernetes_errors(doc: Manifest) -> str | None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{'.'.join(map(str, error.path))}: {error.message}"
    except kubernetes_validate.SchemaNotFoundError as error:
        return error.message
    return None


def _operator_errors(docs: list[Manifest]) -> dict[str, str | None]:
    node = require_tool("node")
    if not OPERATOR_TYPES.is_dir():
        pytest.skip("@kubernetes-models/prometheus-operator missing from .tools: run tools/install-test-tools.sh")
    script = REPO / "tests" / "deploy" / "validate_crds.mjs"
    result = subprocess.run(
        [node, str(script), str(OPERATOR_TYPES.parent.parent)],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {f"{r['kind']}/{r['name']}": r["error"] for r in json.loads(result.stdout)}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_builtin_kinds_validate_against_kubernetes_1_30(kustomization: str) -> None:
    docs = _builtin(render(kustomization))
    assert docs
    errors = {f"{d['kind']}/{d['metadata']['name']}": _kubernetes_errors(d) for d in docs}
    assert {name: error for name, error in errors.items() if error} == {}


@pytest.mark.parametrize("kustomization", ("k8s/monitoring", *SERVER_OVERLAYS))
def test_operator_kinds_validate_against_operator_schemas(kustomization: str) -> None:
    docs = _operator(render(kustomization))
    assert sorted(d["kind"] for d in docs) == ["PrometheusRule", "ServiceMonitor"]
    assert {name: error for name, error in _operator_errors(docs).items() if error} == {}


def test_validators_reject_broken_manifests() -> None:
    """The checks above can fail: a typo'd field and a malformed duration are caught."""
    deployment = find(render("k8s/overlays/cpu"), "Deployment", "synthserve")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {"port": 50051}
    assert "grpcc" in (_kubernetes_errors(deployment) or "")
    monitor = find(render("k8s/monitoring"), "ServiceMonitor")[0]
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert "interval" in (_operator_errors([monitor])["ServiceMonitor/synthserve"] or "")


def _declared_fields(type_name: str) -> set[str]:
    """Field names of one operator API type, from the package's TypeScript declaration."""
    declaration = OPERATOR_TYPES / "monitoring.coreos.com" / "v1" / f"{type_name}.d.ts"
    if not declaration.is_file():
        pytest.skip(f"{declaration} missing: run tools/install-test-tools.sh")
    return set(re.findall(r'^\s+"(\w+)"\??:', declaration.read_text(), flags=re.MULTILINE))


def test_operator_resources_use_only_declared_fields() -> None:
    """The operator's schemas accept unknown fields, which the API server would then drop without a word."""
    docs = render("k8s/monitoring")
    monitor = find(docs, "ServiceMonitor")[0]["spec"]
    assert set(monitor) <= _declared_fields("ServiceMonitorSpec")
    for endpoint in monitor["endpoints"]:
        assert set(endpoint) <= _declared_fields("Endpoint")
    rule_spec = find(docs, "PrometheusRule")[0]["spec"]
    assert set(rule_spec) <= _declared_fields("PrometheusRuleSpec")
    for group in rule_spec["groups"]:
        assert set(group) <= _declared_fields("RuleGroup")
        for rule in group["rules"]:
            assert set(rule) <= _declared_fields("Rule")


def _pod_spec(doc: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def _server(manifests: list[Manifest]) -> tuple[Manifest, dict[str, Any]]:
    deployment = find(manifests, "Deployment", "synthserve")[0]
    return deployment, _pod_spec(deployment)["containers"][0]


@pytest.mark.parametrize("kustomization", (*SERVER_OVERLAYS, *JOBS))
def test_pods_run_unprivileged_with_sized_resources(kustomization: str) -> None:
    workloads = find(render(kustomization), "Deployment") + find(render(kustomization), "Job")
    assert workloads
    for workload in workloads:
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                assert resources["requests"][resource] == resources["limits"][resource], (workload, resource)
            # A read-only root still needs a writable /tmp.
            assert any(mount["mountPath"] == "/tmp" for mount in container["volumeMounts"])


def _flags(args: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in args if arg.startswith("--") and "=" in arg)


def _config_values(manifests: list[Manifest], container: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        config_map = [doc for doc in find(manifests, "ConfigMap") if doc["metadata"]["name"] == name]
        assert config_map, f"envFrom names a ConfigMap that is not rendered: {source}"
        values.update(config_map[0]["data"])
    return values


def _expanded_args(manifests: list[Manifest], container: dict[str, Any]) -> list[str]:
    """The container's args as the kubelet passes them: $(VAR) replaced from the ConfigMap."""
    config = _config_values(manifests, container)
    return [re.sub(r"\$\((\w+)\)", lambda m: config[m.group(1)], arg) for arg in container["args"]]


@pytest.mark.parametrize("kustomization", SERVER_OVERLAYS)
def test_server_args_come_from_the_config_map(kustomization: str) -> None:
    manifests = render(kustomization)
    _, container = _server(manifests)
    config = _config_values(manifests, container)
    referenced = {name for arg in container["args"] for name in re.findall(r"\$\((\w+)\)", arg)}
    assert referenced, "the server's settings should come from the ConfigMap"
    assert referenced <= set(config), referenced - set(config)
    assert container["args"][0] == "serve"
    flags = _flags(container["args"])
    # Inside a pod the server must listen on every interface, on the ports the probes and Services use.
    assert flags["host"] == "0.0.0.0"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": int(flags["port"]), "metrics": int(flags["metrics-port"])}


@pytest.mark.parametrize("kustomization", SERVER_OVERLAYS)
def test_probes_and_shutdown_match_the_server_drain(kustomization: str) -> None:
    manifests = render(kustomization)
    deployment, container = _server(manifests)
    grpc_port = next(port["containerPort"] for port in container["ports"] if port["name"] == "grpc")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port
        assert container[probe]["grpc"].get("service", "") == ""  # the overall health status
    drain_s = float(_flags(_expanded_args(manifests, container))["grace-period-s"])
    pre_stop_s = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace_s = _pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace_s >= pre_stop_s + drain_s + 1, (grace_s, pre_stop_s, drain_s)
    # Health turns NOT_SERVING for the whole drain: liveness must not kill the pod before it ends.
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > drain_s
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("kustomization", SERVER_OVERLAYS)
def test_services_select_the_server_pods(kustomization: str) -> None:
    manifests = render(kustomization)
    deployment, container = _server(manifests)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {port["name"] for port in container["ports"]}
    services = {doc["metadata"]["name"]: doc for doc in find(manifests, "Service")}
    assert set(services) == {"synthserve", "synthserve-headless"}
    for service in services.values():
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    # Headless: DNS answers with the pod addresses, for client-side round_robin.
    assert services["synthserve-headless"]["spec"]["clusterIP"] == "None"
    assert services["synthserve"]["spec"]["type"] == "ClusterIP"
    budget = find(manifests, "PodDisruptionBudget")[0]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def _network_policy(manifests: list[Manifest]) -> dict[str, Any]:
    policies = find(manifests, "NetworkPolicy")
    assert len(policies) == 1, [doc["metadata"]["name"] for doc in policies]
    spec: dict[str, Any] = policies[0]["spec"]
    return spec


def _policy_ports(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ports of every rule; a rule without ports would open all of them."""
    for rule in rules:
        assert rule.get("ports"), f"a rule without ports allows every port: {rule}"
        for port in rule["ports"]:
            assert "endPort" not in port, port
    return [port for rule in rules for port in rule["ports"]]


@pytest.mark.parametrize("kustomization", SERVER_OVERLAYS)
def test_network_policy_isolates_the_server_pods(kustomization: str) -> None:
    manifests = render(kustomization)
    deployment, _ = _server(manifests)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    policy = _network_policy(manifests)
    selector = policy["podSelector"]
    assert set(selector) == {"matchLabels"}
    assert selector["matchLabels"].items() <= pod_labels.items()
    # Both directions are denied unless a rule allows them.
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    # The training Job's pods share the namespace and the name label; the server policy must not catch them.
    job = find(render("k8s/training"), "Job")[0]
    assert not selector["matchLabels"].items() <= job["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("kustomization", SERVER_OVERLAYS)
def test_network_policy_admits_only_the_grpc_and_metrics_ports(kustomization: str) -> None:
    manifests = render(kustomization)
    _, container = _server(manifests)
    by_name = {port["name"]: port for port in container["ports"]}
    by_number = {port["containerPort"]: port for port in container["ports"]}

    def container_port(port: dict[str, Any]) -> tuple[str, int, str]:
        """A policy port (a name or a number) as the container port it opens: (name, number, protocol)."""
        ports = by_name if isinstance(port["port"], str) else by_number
        assert port["port"] in ports, f"the policy opens {port}, which the server container does not declare"
        target = ports[port["port"]]
        assert port.get("protocol", "TCP") == target.get("protocol", "TCP"), (port, target)
        return target["name"], target["containerPort"], target.get("protocol", "TCP")

    rules = _network_policy(manifests)["ingress"]
    allowed = {container_port(port) for port in _policy_ports(rules)}
    expected = {(name, by_name[name]["containerPort"], by_name[name]["protocol"]) for name in ("grpc", "metrics")}
    assert allowed == expected
    # Every port a Service routes to stays reachable.
    service_targets = {port["targetPort"] for doc in find(manifests, "Service") for port in doc["spec"]["ports"]}
    assert service_targets <= {name for name, _, _ in allowed}


@pytest.mark.parametrize("kustomization", SERVER_OVERLAYS)
def test_network_policy_allows_no_egress_but_dns(kustomization: str) -> None:
    rules = _network_policy(render(kustomization))["egress"]
    ports = _policy_ports(rules)
    assert {port["port"] for port in ports} == {53}
    assert sorted(port["protocol"] for port in ports) == ["TCP", "UDP"]
    # Only to the cluster DNS pods, not to port 53 anywhere.
    cluster_dns = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    assert [rule.get("to") for rule in rules] == [[cluster_dns]]


@pytest.mark.parametrize("kustomization", SERVER_OVERLAYS)
def test_service_monitor_scrapes_each_pod_once(kustomization: str) -> None:
    manifests = render(kustomization)
    monitor = find(manifests, "ServiceMonitor")[0]["spec"]
    selected = [
        doc
        for doc in find(manifests, "Service")
        if monitor["selector"]["matchLabels"].items() <= doc["metadata"]["labels"].items()
    ]
    assert [doc["metadata"]["name"] for doc in selected] == ["synthserve"]
    service_ports = {port["name"] for port in selected[0]["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["endpoints"]} == {"metrics"} <= service_ports
    # The alert rules select job="synthserve": the job label comes from this Service label.
    assert selected[0]["metadata"]["labels"][monitor["jobLabel"]] == "synthserve"


@pytest.mark.parametrize("kustomization", SERVER_OVERLAYS)
def test_autoscaler_scales_the_server_on_contract_metrics(kustomization: str) -> None:
    manifests = render(kustomization)
    hpa = find(manifests, "HorizontalPodAutoscaler")[0]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "synthserve"}
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    pod_metrics = [metric["pods"]["metric"]["name"] for metric in hpa["metrics"] if metric["type"] == "Pods"]
    assert pod_metrics == ["synthserve_queued_rows"]
    assert contract_metrics()["synthserve_queued_rows"] == "gauge"
    # The Prometheus Adapter rule publishes exactly that name, per pod.
    adapter = yaml.safe_load((REPO / "k8s" / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    exposed = {rule["name"]["as"]: rule for rule in adapter["rules"]["custom"]}
    assert set(pod_metrics) <= set(exposed)
    rule = exposed["synthserve_queued_rows"]
    assert rule["seriesQuery"].startswith("synthserve_queued_rows{")
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_overlays_size_cpu_and_gpu_pods() -> None:
    _, cpu = _server(render("k8s/overlays/cpu"))
    gpu_manifests = render("k8s/overlays/gpu")
    gpu_deployment, gpu = _server(gpu_manifests)
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert not cpu["image"].endswith("-gpu")
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["image"].endswith("-gpu")
    pod = _pod_spec(gpu_deployment)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert _flags(_expanded_args(gpu_manifests, gpu))["device"] == "cuda"


def test_training_job_writes_the_store_the_server_reads() -> None:
    base = render("k8s/base")
    claims = {doc["metadata"]["name"] for doc in find(base, "PersistentVolumeClaim")}
    _, server = _server(base)
    job = find(render("k8s/training"), "Job")[0]
    trainer = _pod_spec(job)["containers"][0]

    def store_claim(pod: dict[str, Any], container: dict[str, Any]) -> tuple[str, bool]:
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/models")
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        return volume["persistentVolumeClaim"]["claimName"], bool(mount.get("readOnly", False))

    assert store_claim(_pod_spec(find(base, "Deployment")[0]), server) == ("synthserve-models", True)
    assert store_claim(_pod_spec(job), trainer) == ("synthserve-models", False)
    assert claims == {"synthserve-models"}
    assert "ReadWriteMany" in find(base, "PersistentVolumeClaim")[0]["spec"]["accessModes"]
    assert _flags(trainer["args"])["model-store"] == "/models" == _flags(server["args"])["model-store"]
    assert _pod_spec(job)["restartPolicy"] == "Never"


@pytest.mark.parametrize("kustomization", SERVER_OVERLAYS)
def test_server_args_parse_with_the_server_cli(kustomization: str) -> None:
    cli = pytest.importorskip("serving.cli", reason="serving (the serve extra) is not installed")
    manifests = render(kustomization)
    _, container = _server(manifests)
    args = cli.build_parser().parse_args(_expanded_args(manifests, container))
    assert (args.command, args.host, str(args.model_store)) == ("serve", "0.0.0.0", "/models")
    assert args.device == ("cuda" if kustomization.endswith("gpu") else "cpu")
    # Threads: batches in flight x cores per batch fill the pod's CPU limit, no more.
    assert args.inference_threads * args.intra_op_threads == int(container["resources"]["limits"]["cpu"])


def test_training_job_threads_fill_its_cpu_limit() -> None:
    trainer = _pod_spec(find(render("k8s/training"), "Job")[0])["containers"][0]
    assert int(_flags(trainer["args"])["threads"]) == int(trainer["resources"]["limits"]["cpu"])


def _claim_of(pod: dict[str, Any], container: dict[str, Any], path: str) -> str:
    mount = next(
        m for m in container["volumeMounts"] if path == m["mountPath"] or path.startswith(m["mountPath"] + "/")
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return str(volume["persistentVolumeClaim"]["claimName"])


def test_bulk_job_has_one_index_per_partition_and_calls_the_service() -> None:
    cli = pytest.importorskip("serving.cli", reason="serving (the serve extra) is not installed")
    from serving.cli_client import bulk_request

    manifests = render("k8s/bulk")
    job = find(manifests, "Job")[0]
    pod = _pod_spec(job)
    container = pod["containers"][0]
    args = cli.build_parser().parse_args(container["args"])
    request, indices = bulk_request(args, {"JOB_COMPLETION_INDEX": "0"})
    assert job["spec"]["completionMode"] == "Indexed" and indices == [0]
    assert job["spec"]["completions"] == request.partitions == 96 and request.num_rows == 10**9
    assert job["spec"]["parallelism"] <= job["spec"]["completions"]
    assert pod["restartPolicy"] == "Never"
    # The client dials the server's ClusterIP Service on its gRPC port.
    service = find(render("k8s/base"), "Service", "synthserve")[0]
    host, port = args.target.rsplit(":", 1)
    assert host == service["metadata"]["name"]
    assert int(port) == next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    # Partitions land on the Job's own ReadWriteMany claim.
    claim = _claim_of(pod, container, str(args.out))
    pvc = find(manifests, "PersistentVolumeClaim")[0]
    assert claim == pvc["metadata"]["name"] and pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_multinode_training_pods_meet_at_pod_zero_through_the_headless_service() -> None:
    manifests = render("k8s/training-multinode")
    job, service = find(manifests, "Job")[0], find(manifests, "Service")[0]
    pod = _pod_spec(job)
    container = pod["containers"][0]
    flags = _flags(container["args"])
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == int(flags["nnodes"]), "every node must start together"
    assert container["command"] == ["torchrun"] and flags["node-rank"] == "$(NODE_RANK)"
    rank = next(e for e in container["env"] if e["name"] == "NODE_RANK")
    assert (
        rank["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    # Pod 0's DNS name: <job>-0.<subdomain>, the headless Service that selects the pods, ready or not.
    assert pod["subdomain"] == service["metadata"]["name"]
    assert flags["master-addr"] == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert int(flags["master-port"]) in [p["port"] for p in service["spec"]["ports"]]
    # After `-m training.cli train`, the arguments of the one-node training Job.
    train = container["args"][container["args"].index("train") + 1 :]
    single = _pod_spec(find(render("k8s/training"), "Job")[0])["containers"][0]["args"]
    assert train == single
    assert _claim_of(pod, container, flags["model-store"]) == "synthserve-models"
