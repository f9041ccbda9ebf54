"""The deployment files: the Grafana dashboard against a real scrape, the Prometheus config
and rules (promtool where installed), docker-compose.yml and the Dockerfile by their structure
(``docker compose config`` where docker has compose), and the compose mesh itself."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mesh._prometheus import MetricsServer
from mesh.config import load_config
from mesh.node_metrics import NodeMetrics
from mesh.runtime import Runtime
from mesh.sidecar import Sidecar
from tests.nodes import ROOT

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "agent-mesh.json"
PROMETHEUS = DEPLOY / "prometheus"
COMPOSE = ROOT / "docker-compose.yml"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_queries() -> list[str]:
    queries = [target["expr"] for panel in panels() for target in panel["targets"]]
    return queries + [var["query"]["query"] for var in dashboard()["templating"]["list"]]


def alert_queries() -> list[str]:
    groups = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


_NOT_NAMES = [
    r'"(?:[^"\\]|\\.)*"',  # strings (label values, regexes)
    r"\{[^}]*\}",  # label matchers
    r"\[[^\]]*\]",  # ranges
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",  # label lists
    r"\$\w+",  # Grafana variables
    r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b",  # numbers
]
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL query (or ``label_values(metric, label)``) selects."""
    label_values = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
    if label_values:
        return {label_values.group(1)}
    for pattern in _NOT_NAMES:
        query = re.sub(pattern, " ", query)
    names = re.findall(r"\b([a-zA-Z_:][\w:]*)\b(?!\s*\()", query)
    return set(names) - _KEYWORDS


def test_metric_names_are_read_from_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, model) (rate(mesh_a_bucket{x=~"$agent"}[$__rate_'
        "interval]))) / on (model) group_left sum(mesh_b) * 3600 > bool 2 or vector(0)"
    ) == {"mesh_a_bucket", "mesh_b"}
    assert metric_names("label_values(mesh_tasks_total, agent)") == {"mesh_tasks_total"}


async def exported_names() -> set[str]:
    """Every sample name the sidecar and a node expose, from a scrape of each over HTTP."""
    names: set[str] = set()
    for registry in (Sidecar().registry, NodeMetrics().registry):
        server = MetricsServer(registry, 0, addr="127.0.0.1")
        try:
            async with httpx2.AsyncClient(timeout=10) as client:
                response = await client.get(server.url)
        finally:
            await anyio.to_thread.run_sync(server.close)
        for family in text_string_to_metric_families(response.text):
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


@pytest.mark.anyio
async def test_every_dashboard_query_names_a_metric_the_sidecar_or_nodes_export() -> None:
    exported = await exported_names()
    used = set().union(*map(metric_names, dashboard_queries()))
    assert used - exported == set()
    families = {name for name in exported if not name.endswith("_created")}
    shown = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    unshown = {name for name in families if re.sub(r"_(bucket|count|sum)$", "", name) not in shown}
    assert unshown == set()  # every family has a panel


@pytest.mark.anyio
async def test_every_alert_names_an_exported_metric_or_up() -> None:
    used = set().union(*map(metric_names, alert_queries()))
    assert used - await exported_names() == {"up"}


def test_the_dashboard_is_grafana_json_on_the_provisioned_datasource() -> None:
    board = dashboard()
    sources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    uid = sources[0]["uid"]
    assert (board["uid"], board["title"], isinstance(board["schemaVersion"], int)) == (
        "agent-mesh",
        "agent-mesh",
        True,
    )
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_grafana_provisioning_points_at_the_mounted_dashboards_and_prometheus() -> None:
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"] if volume.startswith("./"))
    assert mounts == {
        "./deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "./deploy/grafana/dashboards": "/var/lib/grafana/dashboards",
    }
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/agent-mesh.yml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    source = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"/var/lib/grafana/dashboards/{DASHBOARD.name}"


def node_services(compose: dict[str, Any]) -> dict[str, list[str]]:
    """Services running ``python -m mesh.node``, with their command."""
    return {
        name: service["command"]
        for name, service in compose["services"].items()
        if service.get("command", [])[:3] == ["python", "-m", "mesh.node"]
    }


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_compose_runs_every_agent_of_its_mesh_and_the_observability_stack() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    nodes = node_services(compose)
    mesh = load_config(ROOT / flag(next(iter(nodes.values())), "--config"), environ={})
    assert {flag(command, "--agent") for command in nodes.values()} == set(mesh.agents)
    assert {flag(command, "--config") for command in nodes.values()} == {"deploy/mesh.yaml"}
    assert {"nats", "sidecar", "prometheus", "grafana", "client"} <= set(services)
    nats = services["nats"]
    assert {"--jetstream", "--http_port"} <= set(nats["command"])
    assert f"{flag(nats['command'], '--http_port')}:8222" in nats["ports"]
    assert services["sidecar"]["command"][:3] == ["python", "-m", "mesh.sidecar"]
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source}"
        build = service.get("build")
        if build is not None:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        if service.get("environment", {}).get("NATS_URL"):
            assert service["environment"]["NATS_URL"] == "nats://nats:4222", name


def test_prometheus_scrapes_the_sidecar_and_every_node_where_compose_serves_them() -> None:
    compose = load_yaml(COMPOSE)
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    jobs = {
        job["job_name"]: sorted(t for group in job["static_configs"] for t in group["targets"])
        for job in config["scrape_configs"]
    }
    sidecar_port = flag(compose["services"]["sidecar"]["command"], "--port")
    nodes = node_services(compose)
    assert jobs["mesh-sidecar"] == [f"sidecar:{sidecar_port}"]
    assert jobs["mesh-nodes"] == sorted(
        f"{name}:{flag(command, '--metrics-port')}" for name, command in nodes.items()
    )
    prometheus = compose["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert all((PROMETHEUS / rules).is_file() for rules in config["rule_files"])


def test_the_dockerfile_copies_the_packages_the_readme_and_the_mesh_config() -> None:
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    copied = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    sources = {source for sources in copied for source in sources}
    assert sources == {
        "pyproject.toml",
        "README.md",
        "mesh",
        "agents",
        "patterns",
        "deploy/mesh.yaml",
    }
    assert all((ROOT / source).exists() for source in sources)


def _docker_compose_missing() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed"
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return None if probe.returncode == 0 else "docker has no compose plugin"


@pytest.mark.skipif(_docker_compose_missing() is not None, reason=str(_docker_compose_missing()))
def test_docker_compose_accepts_the_compose_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize(
    "command",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ],
    ids=["config", "rules", "rule-tests"],
)
def test_promtool_accepts_the_prometheus_files(command: list[str]) -> None:
    result = subprocess.run(
        ["promtool", *command], capture_output=True, text=True, check=False, cwd=PROMETHEUS
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.anyio
async def test_the_compose_mesh_answers_the_readme_task_with_its_cost() -> None:
    config = load_config(DEPLOY / "mesh.yaml", environ={})
    async with Runtime.from_config(config) as runtime:
        with anyio.fail_after(20):
            hard = await runtime.request("ask", "Prove that the square root of 2 is irrational.")
            panel = await runtime.request("panel", "Why is the sky blue?")
    assert (hard.error, hard.output["route"], hard.output["agent"]) == (None, "complex", "smart")
    assert (panel.error, panel.output["succeeded"]) == (None, ["cheap", "smart"])
    assert [reply.usage.calls for reply in (hard, panel)] == [2, 2]
    assert all(reply.usage.cost_usd for reply in (hard, panel))


# -- the 3-server cluster: deploy/docker-compose.cluster.yml and config/nats/cluster.conf ----

CLUSTER_COMPOSE = DEPLOY / "docker-compose.cluster.yml"
CLUSTER_CONF = ROOT / "config" / "nats" / "cluster.conf"


def conf_without_comments() -> str:
    return "\n".join(line.split("#", 1)[0] for line in CLUSTER_CONF.read_text().splitlines())


def conf_port(block: str | None = None) -> int:
    """The ``port`` at the top level of cluster.conf (clients), or in its ``block { ... }``."""
    text = conf_without_comments()
    indent = ""
    if block is not None:
        found = re.search(rf"^{block}\s*\{{(.*?)^\}}", text, re.MULTILINE | re.DOTALL)
        assert found is not None, block
        text, indent = found.group(1), r"\s+"
    return int(re.findall(rf"^{indent}port:\s*(\d+)", text, re.MULTILINE)[0])


def cluster_servers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if str(service.get("image", "")).startswith("nats:")
    }


def test_the_cluster_compose_routes_three_servers_running_the_tested_config(
    tmp_path: Path,
) -> None:
    from tests.cluster import NatsCluster

    compose = load_yaml(CLUSTER_COMPOSE)
    servers = cluster_servers(compose)
    variables = set(re.findall(r"\$(\w+)", conf_without_comments()))
    routes = [f"nats-route://{name}:{conf_port('cluster')}" for name in sorted(servers)]
    assert sorted(servers) == ["nats-1", "nats-2", "nats-3"]
    assert variables == {"NATS_SERVER_NAME", "NATS_ROUTES", "NATS_STORE_DIR"}
    for name, server in servers.items():
        environment = server["environment"]
        mounts = dict(volume.split(":")[:2] for volume in server["volumes"])
        assert set(environment) == variables, name
        assert environment["NATS_SERVER_NAME"] == name
        assert [route.strip() for route in environment["NATS_ROUTES"].strip("[]").split(",")] == (
            routes
        )
        assert mounts["../config/nats/cluster.conf"] == flag(server["command"], "--config")
        assert mounts[f"{name}-data"] == environment["NATS_STORE_DIR"]
        assert f"{name}-data" in compose["volumes"]
        assert f"{conf_port()}" in {port.split(":")[1] for port in server["ports"]}
    # The tests' cluster (tests/test_cluster.py) runs the same file with the same variables.
    cluster = NatsCluster(tmp_path)
    assert all(set(cluster.environment(s)) == variables for s in cluster.servers.values())
    assert sorted(cluster.servers) == sorted(servers)


def test_every_mesh_process_of_the_cluster_compose_is_given_all_three_servers() -> None:
    compose = load_yaml(CLUSTER_COMPOSE)
    servers = cluster_servers(compose)
    urls = ",".join(f"nats://{name}:{conf_port()}" for name in sorted(servers))
    mesh_services = {n: s for n, s in compose["services"].items() if n not in servers}
    nodes = node_services(compose)
    mesh = load_config(DEPLOY / "mesh.yaml", environ={})
    assert {flag(command, "--agent") for command in nodes.values()} == set(mesh.agents)
    assert {"sidecar", "client"} <= set(mesh_services)
    for name, service in mesh_services.items():
        config = load_config(DEPLOY / "mesh.yaml", environ=service["environment"])
        assert (config.bus.url, config.defaults.durable.replicas) == (urls, 3), name
        assert set(service["depends_on"]) == set(servers), name
        build = service["build"]
        assert (CLUSTER_COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()


@pytest.mark.skipif(_docker_compose_missing() is not None, reason=str(_docker_compose_missing()))
def test_docker_compose_accepts_the_cluster_compose_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(CLUSTER_COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
