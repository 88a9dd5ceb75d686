"""Production deployment files, checked without Docker or Kubernetes (neither runs here).

- Dockerfile / .dockerignore: parsed; pinned base image, non-root user, no secrets, the gRPC port
  exposed, the CMD's module importable; its CMD is then really started (integration) and
  deploy/workspace.grpc.yaml loads the code location from it over gRPC.
- deploy/helm/values.yaml: the keys the official Dagster chart reads for external Postgres from a
  secret, the K8sRunLauncher, the user deployment and the daemon; its instance sections agree with
  deploy/dagster.prod.yaml and pass Dagster's own instance-config validation.
- deploy/k8s/training-pod.yaml: validated against the Kubernetes API models (dagster-k8s's strict
  converter), used to build a Pipes pod and a `dagster-k8s/config` tag.
- deploy/dagster.prod.yaml: every value Dagster hands to a driver is resolved, and the Postgres
  driver its URL names is installed.
"""
from __future__ import annotations

import contextlib
import fnmatch
import importlib
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

try:  # tests/ as a package or as a plain rootdir-relative directory
    from tests.helpers import free_port
except ImportError:  # pragma: no cover - depends on how pytest was started
    from helpers import free_port

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
HELM_VALUES = REPO / "deploy" / "helm" / "values.yaml"
TRAINING_POD = REPO / "deploy" / "k8s" / "training-pod.yaml"
WORKSPACE_GRPC = REPO / "deploy" / "workspace.grpc.yaml"
PROD_INSTANCE = REPO / "deploy" / "dagster.prod.yaml"

SECRET_NAME = re.compile(r"(passw(or)?d|passwd|secret|token|credential|private[_-]?key|access[_-]?key|api[_-]?key)",
                         re.IGNORECASE)
SECRET_VALUE = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"),  # user:password@ in a URL
    re.compile(r"aws_secret_access_key\s*[=:]", re.IGNORECASE),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),  # GitHub token
]


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; comments dropped, backslash continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, rest = full.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def _env_pairs(args: str) -> list[tuple[str, str]]:
    """ENV/ARG arguments as (name, value): `A=1 B="x y"`, or the legacy `A value` form."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return [(tokens[0], " ".join(tokens[1:]))]
    return [(t.split("=", 1)[0], t.split("=", 1)[1] if "=" in t else "") for t in tokens]


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)  # exec form only: no shell, signals reach dagster
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _option(argv: list[str], *names: str) -> str | None:
    for i, token in enumerate(argv):
        if token in names and i + 1 < len(argv):
            return argv[i + 1]
    return None


@pytest.fixture(scope="module")
def docker() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def cmd(docker) -> list[str]:
    cmds = [args for keyword, args in docker if keyword == "CMD"]
    assert len(cmds) == 1, cmds
    return _exec_form(cmds[0])


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_dockerfile_parser_reads_continuations_and_forms():
    parsed = dockerfile_instructions('FROM a:1\n# c\nRUN x \\\n  # inner\n  && y\nENV A=1 B="two words"\nENV C value\n')
    assert parsed == [("FROM", "a:1"), ("RUN", "x  && y"), ("ENV", 'A=1 B="two words"'), ("ENV", "C value")]
    assert _env_pairs('A=1 B="two words"') == [("A", "1"), ("B", "two words")]
    assert _env_pairs("C value") == [("C", "value")]


def test_base_image_is_python_slim_pinned_to_a_patch_release(docker, pyproject):
    froms = [args for keyword, args in docker if keyword == "FROM"]
    assert len(froms) == 1, froms
    image = froms[0].split()[0]
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image)
    assert match, f"base image {image!r} is not pinned to python:<major>.<minor>.<patch>-slim"
    # the same Python minor the project supports (requires-python = ">=3.11,<3.12")
    assert f">={match[1]}.{match[2]}" in pyproject["project"]["requires-python"]


def test_image_runs_as_a_numeric_non_root_user(docker):
    users = [args for keyword, args in docker if keyword == "USER"]
    assert users, "no USER: the container would run as root"
    uid, _, gid = users[-1].partition(":")
    # numeric, so Kubernetes can enforce runAsNonRoot without reading /etc/passwd in the image
    assert uid.isdigit() and int(uid) != 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) != 0), users[-1]
    last_user = max(i for i, (keyword, _) in enumerate(docker) if keyword == "USER")
    assert last_user < max(i for i, (keyword, _) in enumerate(docker) if keyword == "CMD")


def test_no_secrets_in_env_arg_or_anywhere_in_the_dockerfile(docker):
    pairs = [pair for keyword, args in docker if keyword in {"ENV", "ARG"} for pair in _env_pairs(args)]
    assert pairs, "expected ENV settings (DAGSTER_HOME, LBZF_TRAIN_DIR, ...)"
    for name, value in pairs:
        assert not SECRET_NAME.search(name), f"secret-looking build/env variable {name}"
        for pattern in SECRET_VALUE:
            assert not pattern.search(value), f"{name} holds something secret-looking"
    text = DOCKERFILE.read_text()
    for pattern in SECRET_VALUE:
        assert not pattern.search(text), pattern.pattern
    # no credential files copied in
    for keyword, args in docker:
        if keyword in {"COPY", "ADD"}:
            assert not re.search(r"(\.pem|\.key|id_rsa|id_ed25519|\.env|\.aws|known_hosts)\b", args), args


def test_cmd_serves_the_code_location_on_the_exposed_grpc_port(docker, cmd):
    assert cmd[:3] in (["dagster", "code-server", "start"], ["dagster", "api", "grpc"]), cmd
    port = _option(cmd, "-p", "--port")
    assert port is not None and port.isdigit(), cmd
    assert _option(cmd, "-h", "--host") == "0.0.0.0", "listen on all interfaces inside the container"
    exposed = {p.split("/")[0] for keyword, args in docker if keyword == "EXPOSE" for p in args.split()}
    assert port in exposed, (port, exposed)
    healthchecks = [args for keyword, args in docker if keyword == "HEALTHCHECK"]
    assert all(port in h for h in healthchecks), healthchecks


def test_cmd_module_exists_and_holds_the_definitions(cmd):
    import dagster as dg

    module = _option(cmd, "-m", "--module-name")
    assert module == "orchestration.definitions"
    assert importlib.util.find_spec(module) is not None
    definitions = importlib.import_module(module)
    assert isinstance(definitions.defs, dg.Definitions)
    assert definitions.defs.resolve_job_def("training_job") is not None


def test_image_installs_the_project_pins_and_matching_dagster_k8s(docker, pyproject):
    installs = " ".join(args for keyword, args in docker if keyword == "RUN" and "pip install" in args)
    tokens = shlex.split(installs)
    assert "." in tokens, "the project itself (pyproject.toml's pinned dependencies) is installed"
    pins = dict(re.match(r"([A-Za-z0-9_.-]+)==(\S+)", d).groups() for d in pyproject["project"]["dependencies"]
                if "==" in d)
    extra = [t for t in tokens if "==" in t]
    assert extra == [f"dagster-k8s=={pins['dagster-postgres']}"], extra  # libraries move together (0.29.x)
    for token in tokens:
        assert not token.startswith(("-e", "--editable", "--trusted-host", "--extra-index-url")), token
    copied = [src for keyword, args in docker if keyword == "COPY" for src in shlex.split(args)[:-1]
              if not src.startswith("--")]
    packages = set(pyproject["tool"]["setuptools"]["packages"]["find"]["include"])
    assert {p.rstrip("*") for p in packages} <= set(copied), (packages, copied)
    assert {"pyproject.toml", pyproject["project"]["readme"]} <= set(copied)
    for src in copied:
        assert (REPO / src).exists(), f"COPY {src}: not in the build context"


def _dockerignore() -> list[str]:
    return [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(prefix, c) for c in candidates for prefix in prefixes) or \
                (pattern.startswith("**/") and any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_local_state_and_credentials_out_but_not_the_sources(docker):
    patterns = _dockerignore()
    for path in [".venv/bin/python", ".git/config", ".lbzf/demo/store/raw/x.mp4", "tests/test_x.py", ".env",
                 "deploy/id_ed25519", "keys/server.pem", "models/yolov8n.pt", "assets/__pycache__/a.cpython-311.pyc",
                 "lbzf_pipeline.egg-info/PKG-INFO", "x/known_hosts"]:
        assert _ignored(path, patterns), f"{path} would be sent to the Docker build"
    copied = [src for keyword, args in docker if keyword == "COPY" for src in shlex.split(args)[:-1]]
    for src in copied:
        assert not _ignored(src, patterns), f"COPY {src} is excluded by .dockerignore"
    for source in (REPO / "pipeline").rglob("*.py"):
        assert not _ignored(str(source.relative_to(REPO)), patterns), source


# --------------------------------------------------------------------------- workspace over gRPC


def test_workspace_grpc_yaml_is_valid_and_names_the_helm_location(cmd, monkeypatch):
    from dagster._core.workspace.config_schema import ensure_workspace_config

    monkeypatch.setenv("LBZF_CODE_SERVER_HOST", "lbzf-code")
    monkeypatch.setenv("LBZF_CODE_SERVER_PORT", _option(cmd, "-p", "--port"))
    raw = yaml.safe_load(WORKSPACE_GRPC.read_text())
    ensure_workspace_config(raw, str(WORKSPACE_GRPC))
    (entry,) = raw["load_from"]
    server = entry["grpc_server"]
    helm = yaml.safe_load(HELM_VALUES.read_text())
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert server["location_name"] == deployment["name"]
    # host and port come from the environment (compose service name, VM address ...)
    assert server["host"] == {"env": "LBZF_CODE_SERVER_HOST"} and server["port"] == {"env": "LBZF_CODE_SERVER_PORT"}


@contextlib.contextmanager
def _serve(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as handle:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the code server and the gRPC server it started
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.mark.integration
def test_image_cmd_serves_what_workspace_grpc_yaml_loads(cmd, tmp_path, monkeypatch):
    """The Dockerfile's CMD, run here (loopback, a free port), is loaded through deploy/workspace.grpc.yaml."""
    import dagster as dg
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    port = free_port()
    argv = list(cmd)
    argv[argv.index(_option(cmd, "-h", "--host"))] = "127.0.0.1"
    argv[argv.index(_option(cmd, "-p", "--port"))] = str(port)
    argv[0] = str(Path(sys.executable).with_name(argv[0]))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LBZF_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(home), "DAGSTER_DEPLOYMENT": "local", "LBZF_STORAGE_ROOT": str(tmp_path / "store")})
    monkeypatch.setenv("LBZF_CODE_SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("LBZF_CODE_SERVER_PORT", str(port))
    (origin,) = location_origins_from_yaml_paths([str(WORKSPACE_GRPC)])
    assert origin.location_name == "lbzf-pipeline" and origin.port == port
    log = tmp_path / "code_server.log"
    with _serve(argv, env, log) as proc, dg.DagsterInstance.ephemeral() as instance:
        deadline, location, last = time.monotonic() + 180, None, None
        while location is None and time.monotonic() < deadline:
            assert proc.poll() is None, f"code server exited:\n{log.read_text(errors='replace')}"
            try:
                location = origin.create_location(instance)
            except Exception as error:  # not serving yet (the location imports torch, ultralytics ...)
                last = error
                time.sleep(1)
        assert location is not None, f"{last}\n{log.read_text(errors='replace')}"
        with location:
            (repo,) = location.get_repositories().values()
            jobs = {job.name for job in repo.get_all_jobs()}
            assert {"training_job", "frames_job", "monthly_retraining_job"} <= jobs, jobs
            assert "monthly_retraining_job_schedule" in {s.name for s in repo.get_schedules()}
            assert {"buffer_footage_sensor", "annotation_exports_sensor"} <= {s.name for s in repo.get_sensors()}


# --------------------------------------------------------------------------- Helm values


@pytest.fixture(scope="module")
def helm() -> dict:
    return yaml.safe_load(HELM_VALUES.read_text())


def _walk(node, path=()) -> Iterator[tuple[tuple, object]]:
    yield path, node
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, index))


def _secret_leaks(document) -> list[str]:
    """Secret-looking keys holding a value, and secret-looking values anywhere."""
    leaks = []
    for path, value in _walk(document):
        key = str(path[-1]) if path else ""
        reference = re.search(r"(secretName|Secrets|secretRef|secretKeyRef)$", key, re.IGNORECASE) or key == "name"
        inline = isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip()
        if SECRET_NAME.search(key) and not reference and inline:
            leaks.append(f"{'.'.join(map(str, path))} = {value!r}")
        if isinstance(value, str) and any(p.search(value) for p in SECRET_VALUE):
            leaks.append(f"{'.'.join(map(str, path))} looks secret")
        if isinstance(value, Mapping) and "name" in value and "value" in value and \
                SECRET_NAME.search(str(value["name"])):  # an env var with a secret-looking name, inline
            leaks.append(f"{'.'.join(map(str, path))}: {value['name']} set inline; use valueFrom/envFrom a Secret")
    return leaks


def test_leak_finder_finds_inlined_secrets():
    assert _secret_leaks({"postgresql": {"postgresqlPassword": "hunter2"}})
    assert _secret_leaks({"env": [{"name": "DAGSTER_PG_PASSWORD", "value": "x"}]})
    assert _secret_leaks({"url": "postgresql://dagster:hunter2@db/dagster"})
    assert not _secret_leaks({"global": {"postgresqlSecretName": "lbzf-dagster-postgresql"},
                              "postgresql": {"postgresqlPassword": ""}, "envSecrets": [{"name": "s"}]})


@pytest.mark.parametrize("path", [HELM_VALUES, TRAINING_POD, WORKSPACE_GRPC])
def test_no_secrets_are_inlined(path):
    assert _secret_leaks(yaml.safe_load(path.read_text())) == []


def test_helm_uses_external_postgres_with_the_password_from_a_secret(helm):
    assert helm["postgresql"]["enabled"] is False  # no in-cluster database
    assert helm["generatePostgresqlPasswordSecret"] is False  # the operator creates the secret
    assert helm["global"]["postgresqlSecretName"]
    assert helm["postgresql"]["postgresqlPassword"] in ("", None)
    assert helm["postgresql"]["postgresqlHost"] and helm["postgresql"]["postgresqlDatabase"]
    assert helm["postgresql"]["postgresqlParams"]["sslmode"] in {"require", "verify-ca", "verify-full"}


def test_helm_postgres_url_names_an_installed_driver(helm):
    import sqlalchemy
    from dagster_postgres.utils import get_conn_string

    pg = helm["postgresql"]
    url = get_conn_string(username=pg["postgresqlUsername"], password="x", hostname=pg["postgresqlHost"],
                          db_name=pg["postgresqlDatabase"], port=str(pg["service"]["port"]),
                          params=pg["postgresqlParams"], scheme=pg.get("postgresqlScheme") or "postgresql")
    sqlalchemy.engine.make_url(url).get_dialect().import_dbapi()  # ImportError if the driver is missing


def test_helm_runs_the_daemon_with_queued_runs_and_the_k8s_run_launcher(helm):
    daemon = helm["dagsterDaemon"]
    assert daemon["enabled"] is True
    assert daemon["runCoordinator"]["enabled"] is True and daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert helm["scheduler"]["type"] == "DagsterDaemonScheduler"
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = helm["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["envSecrets"] and launcher["envConfigMaps"]
    for image in (helm["dagsterWebserver"]["image"], daemon["image"]):
        assert image["tag"] == importlib.import_module("dagster").__version__  # chart images = library version


def test_helm_user_deployment_runs_the_dockerfile_image_command_and_port(helm, docker, cmd):
    section = helm["dagster-user-deployments"]
    assert section["enabled"] is True and section["enableSubchart"] is True
    (deployment,) = section["deployments"]
    args = deployment.get("codeServerArgs") or deployment.get("dagsterApiGrpcArgs")
    assert _option(args, "-m", "--module-name") == _option(cmd, "-m", "--module-name")
    assert str(deployment["port"]) == _option(cmd, "-p", "--port")
    assert deployment["image"]["repository"] and deployment["image"]["tag"] not in ("", "latest")
    assert [s["name"] for s in deployment["envSecrets"]] and [c["name"] for c in deployment["envConfigMaps"]]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert {"name": "DAGSTER_DEPLOYMENT", "value": "prod"} in deployment["env"]
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True
    docker_user = [args for keyword, args in docker if keyword == "USER"][-1].split(":")[0]
    assert str(deployment["podSecurityContext"]["runAsUser"]) == docker_user
    launcher = helm["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["envSecrets"] == deployment["envSecrets"]
    assert launcher["envConfigMaps"] == deployment["envConfigMaps"]
    # includeConfigInLaunchedRuns copies the deployment's resources onto every run pod: size runs in one place
    assert "resources" not in deployment and launcher["resources"]["limits"]["memory"]
    assert launcher["securityContext"]["runAsNonRoot"] is True
    assert str(launcher["securityContext"]["runAsUser"]) == docker_user
    # the Jetson key arrives as files from a secret, readable by the pod's group
    (volume,) = [v for v in deployment["volumes"] if "secret" in v]
    (mount,) = [m for m in deployment["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True and volume["secret"]["defaultMode"] & 0o007 == 0
    fs_group = launcher["runK8sConfig"]["podSpecConfig"]["securityContext"]["fsGroup"]
    assert fs_group == deployment["podSecurityContext"]["fsGroup"]


def test_helm_kubernetes_fragments_are_valid_kubernetes_models(helm):
    import kubernetes
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

    client = kubernetes.client
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    launcher = helm["runLauncher"]["config"]["k8sRunLauncher"]
    fragments = [(client.V1PodSecurityContext, deployment["podSecurityContext"]),
                 (client.V1SecurityContext, deployment["securityContext"]),
                 (client.V1SecurityContext, launcher["securityContext"]),
                 (client.V1ResourceRequirements, launcher["resources"]),
                 (client.V1PodSpec, {"containers": [], **launcher["runK8sConfig"]["podSpecConfig"]})]
    fragments += [(client.V1Volume, v) for v in deployment["volumes"]]
    fragments += [(client.V1VolumeMount, m) for m in deployment["volumeMounts"]]
    fragments += [(client.V1EnvVar, e) for e in deployment["env"]]
    for model, fragment in fragments:  # raises on unknown or misspelt fields
        k8s_model_from_dict(model, k8s_snake_case_dict(model, fragment))


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_helm_instance_sections_match_the_production_instance(helm):
    prod = yaml.safe_load(PROD_INSTANCE.read_text())
    extra = helm["additionalInstanceConfig"]
    for section in ("concurrency", "run_monitoring", "run_retries"):
        assert extra[section] == prod[section], section
    # the chart's own blocks for these are off, so the instance gets each section once
    assert helm["dagsterDaemon"]["runMonitoring"]["enabled"] is False
    assert helm["dagsterDaemon"]["runRetries"]["enabled"] is False
    assert not helm.get("concurrency", {}).get("enabled")
    retention = {section: {_snake(k): v for k, v in value.items()} for section, value in helm["retention"].items()
                 if section != "enabled"}
    assert retention["schedule"] == prod["retention"]["schedule"]
    assert {k: v for k, v in retention["sensor"]["purge_after_days"].items() if v != -1} == \
        prod["retention"]["sensor"]["purge_after_days"]
    assert helm["telemetry"]["enabled"] is prod["telemetry"]["enabled"] is False
    s3 = helm["computeLogManager"]["config"]["s3ComputeLogManager"]
    assert helm["computeLogManager"]["type"] == prod["compute_logs"]["class"] == "S3ComputeLogManager"
    assert s3["prefix"] == prod["compute_logs"]["config"]["prefix"]
    assert s3["uploadExtraArgs"]["ServerSideEncryption"] == "aws:kms" and s3["uploadExtraArgs"]["SSEKMSKeyId"]


def test_helm_rendered_instance_passes_dagster_validation(helm, tmp_path, monkeypatch):
    """The instance the chart writes from these values (storage, queue, compute logs, retention and the
    additional sections), checked with Dagster's own instance schema."""
    from dagster._core.instance.config import dagster_instance_config

    pg = helm["postgresql"]
    postgres_db = {"username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
                   "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"],
                   "port": pg["service"]["port"], "params": pg["postgresqlParams"], "scheme": pg["postgresqlScheme"]}
    s3 = helm["computeLogManager"]["config"]["s3ComputeLogManager"]
    queued = helm["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    rendered = {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage",
                        "config": {"postgres_db": postgres_db}},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage",
                              "config": {"postgres_db": postgres_db}},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage",
                             "config": {"postgres_db": postgres_db}},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {_snake(k): v for k, v in queued.items()}},
        "compute_logs": {"module": "dagster_aws.s3.compute_log_manager", "class": "S3ComputeLogManager",
                         "config": {_snake(k): v for k, v in s3.items()}},
        "retention": {section: {_snake(k): v for k, v in value.items()} for section, value in helm["retention"].items()
                      if section != "enabled"},
        "telemetry": helm["telemetry"],
        **helm["additionalInstanceConfig"],
    }
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "placeholder")
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_monitoring"]["max_runtime_seconds"] == 43200
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["compute_logs"]["config"]["upload_extra_args"]["ServerSideEncryption"] == "aws:kms"


# --------------------------------------------------------------------------- GPU training pod


@pytest.fixture(scope="module")
def pod() -> dict:
    return yaml.safe_load(TRAINING_POD.read_text())


def test_training_pod_is_a_valid_kubernetes_pod(pod):
    import kubernetes
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    # strict: an unknown or misspelt field anywhere raises
    model = k8s_model_from_dict(kubernetes.client.V1Pod, k8s_snake_case_dict(kubernetes.client.V1Pod, pod))
    assert model.spec.restart_policy == "Never"
    with pytest.raises(Exception, match="Unexpected keys"):
        broken = json.loads(json.dumps(pod))
        broken["spec"]["nodeSelecter"] = broken["spec"].pop("nodeSelector")
        k8s_snake_case_dict(kubernetes.client.V1Pod, broken)


def test_training_pod_asks_for_one_gpu_on_the_gpu_pool(pod):
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert str(container["resources"]["requests"].get("nvidia.com/gpu", 1)) == "1"
    assert container["resources"]["limits"].get("memory")
    assert spec["nodeSelector"], "pin training to GPU nodes"
    assert any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule" for t in spec["tolerations"])
    shm = [v for v in spec["volumes"] if v["name"] in {m["name"] for m in container["volumeMounts"]
                                                      if m["mountPath"] == "/dev/shm"}]
    assert shm and shm[0]["emptyDir"]["medium"] == "Memory"  # PyTorch data loaders need more than 64 MB
    train_dir = {e["name"]: e.get("value") for e in container["env"]}["LBZF_TRAIN_DIR"]
    assert any(m["mountPath"] == train_dir for m in container["volumeMounts"])  # resumable across pods
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_training_pod_runs_the_images_train_worker_with_the_helm_image(pod, helm):
    (container,) = pod["spec"]["containers"]
    assert container["command"][-2:] == ["-m", "resources.train_worker"]
    assert importlib.util.find_spec("resources.train_worker") is not None
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    assert container["image"] == f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    assert pod["spec"]["serviceAccountName"] == helm["global"]["serviceAccountName"]  # the S3/KMS role
    refs = container["envFrom"]
    assert {r["secretRef"]["name"] for r in refs if "secretRef" in r} == {s["name"] for s in deployment["envSecrets"]}
    assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} == \
        {c["name"] for c in deployment["envConfigMaps"]}


def test_training_pod_builds_a_pipes_pod(pod):
    from dagster_k8s.pipes import build_pod_body

    body = build_pod_body(pod_name="lbzf-train-test", image=None, command=None,
                          env_vars={"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msgs"},
                          base_pod_meta=pod["metadata"], base_pod_spec=pod["spec"])
    (container,) = body.spec.containers
    assert container.resources.limits["nvidia.com/gpu"] in (1, "1")
    assert body.spec.node_selector == pod["spec"]["nodeSelector"]
    assert {e.name for e in container.env} >= {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", "LBZF_TRAIN_DEVICE"}
    assert body.metadata.labels["app.kubernetes.io/part-of"] == "lbzf"


def test_training_pod_converts_to_a_dagster_k8s_config_tag(pod):
    from dagster_k8s.job import USER_DEFINED_K8S_CONFIG_KEY, UserDefinedDagsterK8sConfig

    (container,) = pod["spec"]["containers"]
    container_config = {k: v for k, v in container.items() if k not in {"name", "image", "command"}}
    pod_spec_config = {k: v for k, v in pod["spec"].items() if k not in {"containers", "restartPolicy"}}
    tag = {"container_config": container_config, "pod_spec_config": pod_spec_config,
           "pod_template_spec_metadata": {"labels": pod["metadata"]["labels"]}}
    config = UserDefinedDagsterK8sConfig.from_dict(tag)
    assert config.container_config["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert config.pod_spec_config["node_selector"] == pod["spec"]["nodeSelector"]
    assert USER_DEFINED_K8S_CONFIG_KEY == "dagster-k8s/config"


def _k8s_manifests() -> list[tuple[Path, dict]]:
    """Every Kubernetes pod manifest under deploy/ (the GPU pod spec files)."""
    out = []
    for path in sorted((REPO / "deploy").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Pod":
                out.append((path, doc))
    return out


def _gpu_settings(node) -> Iterator[tuple[str, object]]:
    """(field, value) of every node selector / toleration anywhere in a parsed file."""
    for path, value in _walk(node):
        if path and path[-1] in ("nodeSelector", "node_selector", "tolerations"):
            yield str(path[-1]), value


def test_every_training_job_runs_on_the_one_gpu_node():
    """pipeline/gpu_node.py is the one GPU node: the four training jobs carry it as their k8s config tag,
    and the pod spec files under deploy/ and the Helm values name the same selector and toleration."""
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    from orchestration.definitions import build_definitions
    from pipeline.gpu_node import GPU_NODE_SELECTOR, GPU_RESOURCES, GPU_RUN_TAGS, GPU_TOLERATIONS

    defs = build_definitions("local", env={})
    for name in ("training_job", "monthly_retraining_job", "retraining_resume_job", "profiles_job"):
        tags = defs.resolve_job_def(name).tags
        config = tags.get("dagster-k8s/config")
        config = json.loads(config) if isinstance(config, str) else config
        assert config == GPU_RUN_TAGS["dagster-k8s/config"], name
        parsed = UserDefinedDagsterK8sConfig.from_dict(config)
        assert parsed.pod_spec_config["node_selector"] == GPU_NODE_SELECTOR, name
    for name in ("frames_job", "annotations_job", "rollback_production_job"):
        assert "dagster-k8s/config" not in defs.resolve_job_def(name).tags, f"{name} needs no GPU"

    manifests = _k8s_manifests()
    assert manifests, "expected the GPU pod spec under deploy/"
    for path, pod in manifests:
        found = dict(_gpu_settings(pod))
        assert found.get("nodeSelector") == GPU_NODE_SELECTOR, path
        assert found.get("tolerations") == GPU_TOLERATIONS, path
        (container,) = pod["spec"]["containers"]
        as_str = lambda d: {k: {n: str(v) for n, v in d[k].items()} for k in d}  # noqa: E731
        assert as_str(container["resources"]) == as_str(GPU_RESOURCES), path

    helm_values = yaml.safe_load(HELM_VALUES.read_text())
    for field, value in _gpu_settings(helm_values):  # the chart pins nothing else to (or off) a GPU node
        assert "nvidia" not in json.dumps(value) and "accelerator" not in json.dumps(value), (field, value)
    text = HELM_VALUES.read_text()
    ((key, value),) = GPU_NODE_SELECTOR.items()
    assert f"node selector {key}: {value}" in text
    (toleration,) = GPU_TOLERATIONS
    assert f"toleration {toleration['key']} ({toleration['operator']}, {toleration['effect']})" in text
    everywhere = text + TRAINING_POD.read_text() + (REPO / "docs" / "deployment.md").read_text()
    assert set(re.findall(r"([\w.-]+/accelerator)[:=] ?([\w-]+)", everywhere)) == {(key, value)}
    assert "gpu.present" not in everywhere  # the GPU operator's label is not the one the jobs select


# --------------------------------------------------------------------------- deploy/dagster.prod.yaml


PROD_INSTANCE_ENV = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster",
                     "DAGSTER_PG_USERNAME": "dagster", "DAGSTER_PG_PASSWORD": "placeholder",
                     "LBZF_S3_BUCKET": "lbzf-artifacts-placeholder",
                     "LBZF_S3_KMS_KEY_ID": "arn:aws:kms:us-east-1:111122223333:key/"
                                           "00000000-0000-0000-0000-000000000000"}


@pytest.fixture
def prod_config(tmp_path, monkeypatch) -> dict:
    from dagster._core.instance.config import dagster_instance_config

    for key, value in PROD_INSTANCE_ENV.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "dagster.yaml").write_text(PROD_INSTANCE.read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    return config


def _resolved(section: Mapping) -> dict:
    """A configurable instance section's config as its class receives it (env sources resolved)."""
    from dagster._config import process_config
    from dagster._serdes.config_class import class_from_code_pointer

    klass = class_from_code_pointer(section["module"], section["class"])
    result = process_config(klass.config_type(), section.get("config") or {})
    assert result.success, result.errors
    return result.value


def test_prod_instance_hands_only_resolved_values_to_drivers(prod_config):
    """`{env: X}` is resolved only where Dagster's schema says StringSource/IntSource; inside free-form
    mappings (postgres `params`, `upload_extra_args`) it reaches psycopg2 / boto3 as a dict and breaks them."""
    sections = {"storage": {"module": "dagster_postgres", "class": "DagsterPostgresStorage",
                            "config": prod_config["storage"]["postgres"]},
                "compute_logs": prod_config["compute_logs"]}
    unresolved = [f"{name}." + ".".join(map(str, path)) for name, section in sections.items()
                  for path, value in _walk(_resolved(section))
                  if isinstance(value, Mapping) and set(value) == {"env"}]
    assert unresolved == [], f"left unresolved by Dagster, handed to the driver as a dict: {unresolved}"


def test_resolution_check_sees_resolved_env_values(monkeypatch):
    monkeypatch.setenv("LBZF_TEST_BUCKET", "b")
    value = _resolved({"module": "dagster_aws.s3.compute_log_manager", "class": "S3ComputeLogManager",
                       "config": {"bucket": {"env": "LBZF_TEST_BUCKET"}, "upload_extra_args": {"X": {"env": "Y"}}}})
    assert value["bucket"] == "b" and value["upload_extra_args"] == {"X": {"env": "Y"}}


def test_prod_instance_postgres_url_names_an_installed_driver(prod_config):
    import sqlalchemy
    from dagster_postgres.utils import pg_url_from_config

    config = _resolved({"module": "dagster_postgres", "class": "DagsterPostgresStorage",
                        "config": prod_config["storage"]["postgres"]})
    url = pg_url_from_config(config)
    sqlalchemy.engine.make_url(url).get_dialect().import_dbapi()  # ImportError: driver not installed
