"""docker-compose.yml (laptops), checked offline: this machine has no Docker daemon, so it is
validated here, not run.

The file must be a valid Compose file: it is validated with jsonschema against the Compose
Specification's JSON Schema, vendored in tests/k8s/schemas/compose-spec.json (Apache-2.0,
LICENSE.compose-spec beside it). Source: compose-spec/compose-spec, schema/compose-spec.json on
its default branch, as vendored by check-jsonschema 0.39.0 (PyPI wheel,
check_jsonschema/builtin_schemas/vendor/compose-spec.json; the sha256 below is the one that
package records). To update: take the file from a newer check-jsonschema wheel and its sha256.
Then the facts Kubernetes fixes: the same environment names as k8s/base/config.env and the
Secret's keys, the same secret keys per container, one service per worker of workers.WORKERS,
one image, dependencies that exist and wait for health or for the migrations to finish.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import jsonschema
import yaml

from workers import WORKERS
from workers.ops.devenv import dev_keys

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
K8S_BASE = REPO / "k8s" / "base"
CONFIG_ENV = K8S_BASE / "config.env"
SECRET_TEMPLATE = REPO / "k8s" / "secret.template.yaml"
IMAGE = "spotter:dev"
BUILD = {"context": ".", "dockerfile": "k8s/Dockerfile"}
INFRA = ("postgres", "rabbitmq", "s3")
# Set on a laptop but in no Kubernetes manifest; each must be documented in docs/reference.md.
LAPTOP_ONLY = {"CORS_ALLOWED_ORIGINS": "browser apps and web uploads from any localhost port"}


# ---- what the files say ------------------------------------------------------------------
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # YAML merge keys (<<) resolved, as Compose does


def services() -> dict[str, dict]:
    return compose()["services"]


def spotter_services() -> dict[str, dict]:
    """The services running the project's image (not PostgreSQL, RabbitMQ, the S3 server)."""
    return {name: s for name, s in services().items() if s.get("image") == IMAGE}


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: str(v) for k, v in env.items()}


def config_env_names() -> set[str]:
    return {line.split("=", 1)[0].strip() for line in CONFIG_ENV.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")}


def secret_names() -> set[str]:
    template = next(d for d in yaml.safe_load_all(SECRET_TEMPLATE.read_text()) if d)
    return set(template["stringData"])


def k8s_containers() -> dict[str, dict]:
    """Kubernetes object name (ingress, worker-video, migrate, …) → its first container."""
    found = {}
    for path in sorted(K8S_BASE.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in ("Deployment", "Job"):
                found[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]["containers"][0]
    return found


def k8s_env_names() -> set[str]:
    return {e["name"] for c in k8s_containers().values() for e in c.get("env", [])}


def secret_refs(container: dict) -> tuple[set[str], set[str]]:
    """(every Secret key the container reads, the ones it requires)."""
    refs = [e["valueFrom"]["secretKeyRef"] for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})]
    return {r["key"] for r in refs}, {r["key"] for r in refs if not r.get("optional")}


# ---- the schema ----------------------------------------------------------------------------
def test_the_vendored_schema_is_the_one_check_jsonschema_ships():
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256


def schema_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_docker_compose_yml_is_a_valid_compose_file():
    problems = [f"{e.json_path}: {e.message}" for e in schema_validator().iter_errors(compose())]
    assert problems == []


def test_the_schema_rejects_what_compose_would():
    """The check is live: a misspelt key and an unknown depends_on condition fail it."""
    validator = schema_validator()
    for mistake in ({"restart_policy": "always"},
                    {"depends_on": {"postgres": {"condition": "service_ready"}}}):
        broken = compose()
        broken["services"]["ingress"].update(mistake)
        assert list(validator.iter_errors(broken)), f"{mistake} passed the schema"


# ---- the same system as Kubernetes -----------------------------------------------------------
def test_every_worker_and_the_ingress_run_from_the_one_image():
    spotter = spotter_services()
    assert {f"worker-{name}" for name in WORKERS} | {"ingress", "setup"} == set(spotter)
    for name in WORKERS:
        assert spotter[f"worker-{name}"]["command"] == ["run", name]
    assert spotter["ingress"]["command"] == ["serve"]
    for name, service in spotter.items():
        assert service["build"] == BUILD, name
        assert service["env_file"] == ["k8s/base/config.env"], name
    assert (REPO / BUILD["dockerfile"]).is_file()
    assert set(services()) == set(spotter) | set(INFRA)


def test_setup_does_what_the_migration_job_and_workers_dev_do():
    script = spotter_services()["setup"]["command"][0]
    steps = [line.strip() for line in script.splitlines() if line.strip()]
    assert steps[0] == "workers migrate --all --create"
    assert "workers topology" in steps
    assert steps[-1] == "workers storage setup --create"
    assert spotter_services()["setup"]["restart"] == "no"


def test_environment_names_are_the_kubernetes_ones():
    known = config_env_names() | secret_names() | k8s_env_names()
    reference = (REPO / "docs" / "reference.md").read_text()
    for name in LAPTOP_ONLY:
        assert f"`{name}`" in reference, f"{name} is set for laptops but not documented"
    unknown = {f"{service}: {name}" for service, s in spotter_services().items()
               for name in environment(s) if name not in known and name not in LAPTOP_ONLY}
    assert unknown == set()


def test_each_container_gets_the_secret_keys_it_gets_in_kubernetes():
    containers = k8s_containers()
    secrets = secret_names()
    counterpart = {"setup": "migrate", **{name: name for name in spotter_services() if name != "setup"}}
    for service, k8s_name in counterpart.items():
        given = set(environment(spotter_services()[service])) & secrets
        reads, requires = secret_refs(containers[k8s_name])
        if service == "setup":  # the Job's keys, and the broker's and the bucket's for topology and storage
            assert requires <= given, service
            assert given - reads == {"RABBITMQ_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY"}, service
        else:
            assert requires <= given <= reads, (service, given, reads)


def test_the_transcode_sandbox_is_set_up_as_in_kubernetes():
    service = spotter_services()["worker-transcode"]
    k8s_values = {e["name"]: e["value"] for e in k8s_containers()["worker-transcode"]["env"] if "value" in e}
    env = environment(service)
    assert {name: env.get(name) for name in k8s_values} == k8s_values  # TMPDIR, TRANSCODE_TMPDIR, drain, …
    assert any(t.startswith("/scratch:") for t in service["tmpfs"])
    assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"]
    assert service["read_only"] is True and service["user"] == "10001:10001"


def test_dependencies_exist_and_wait_for_health_or_completion():
    all_services = services()
    for name, service in all_services.items():
        for target, dep in (service.get("depends_on") or {}).items():
            assert target in all_services, f"{name} depends on missing {target}"
            if dep["condition"] == "service_healthy":
                assert "healthcheck" in all_services[target], f"{name} waits for {target}'s health, it has none"
            else:
                assert dep["condition"] == "service_completed_successfully" and target == "setup", (name, target)
    for name, service in spotter_services().items():
        if name == "setup":
            assert set(service["depends_on"]) == set(INFRA)
            continue
        assert "healthcheck" in service, name
        assert service["depends_on"]["setup"]["condition"] == "service_completed_successfully", name
        if "S3_ACCESS_KEY" in environment(service):
            assert service["depends_on"]["s3"]["condition"] == "service_healthy", name


def test_ports_are_published_on_the_loopback_only():
    for name, service in services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_the_keys_compose_requires_are_the_ones_devenv_prints():
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_FILE.read_text()))
    assert required and required <= set(dev_keys())
