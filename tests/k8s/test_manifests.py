"""The Kubernetes manifests under k8s/, rendered and checked offline (no cluster, no services).

Every overlay under k8s/overlays is rendered once per module with `kubectl kustomize` (kubectl's
bundled kustomize). Each object is validated against the Kubernetes OpenAPI schemas of
KUBERNETES_VERSION by the PyPI package kubernetes-validate in strict mode (unknown fields fail);
KEDA's ScaledObject and TriggerAuthentication, which it has no schemas for, against the trimmed
CRD schemas vendored in tests/k8s/schemas with jsonschema. Then the facts the code fixes: one
Deployment per worker of workers.WORKERS, probes on the health endpoints, drain inside the grace
period, the migration Job, Secret keys, KEDA triggers and the Dockerfile's user.
"""
from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared.config import Config
from workers import WORKERS, load
from workers.transcode.limits import Limits

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
# overlays that include the KEDA component (prod must: test_prod_scales_workers_with_keda)
KEDA_OVERLAYS = [o for o in OVERLAYS if any(
    c.rstrip("/").endswith("components/keda")
    for c in yaml.safe_load((K8S / "overlays" / o / "kustomization.yaml").read_text()).get("components", []))]
KUBERNETES_VERSION = "1.33.0"
NAMESPACE = "app"
SECRET_NAME = "spotter-secrets"
DEFAULT_HEALTH_PORT = 8081
DEFAULT_MAX_UPLOAD_BYTES = 500 * 1024 * 1024  # workers/runtime/storage.py
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_v1alpha1_triggerauthentication.json",
}


# ---- rendering ---------------------------------------------------------------------------
@functools.cache
def render(overlay: str) -> tuple[dict, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not on PATH: these tests render k8s/overlays/* with `kubectl kustomize` "
                    "(install kubectl >= 1.27, which bundles kustomize v5)", pytrace=False)
    done = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay} failed:\n{done.stderr}"
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request) -> tuple[dict, ...]:
    return render(request.param)


@pytest.fixture(scope="module", params=KEDA_OVERLAYS)
def autoscaled(request) -> tuple[dict, ...]:
    return render(request.param)


def of_kind(objects, kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def named(objects, kind: str, name: str) -> dict:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_template(o: dict) -> dict:
    """The pod template of a Deployment, Job or CronJob."""
    return (o["spec"]["jobTemplate"]["spec"] if o["kind"] == "CronJob" else o["spec"])["template"]


def workloads(objects) -> list[tuple[dict, dict]]:
    """(object, pod spec) of every Deployment, Job and CronJob."""
    return [(o, pod_template(o)["spec"]) for o in objects if o["kind"] in ("Deployment", "Job", "CronJob")]


def argv(container: dict) -> list[str]:
    return list(container.get("command", [])) + list(container.get("args", []))


def worker_deployments(objects) -> dict[str, dict]:
    """worker name → Deployment, for every Deployment running `workers run <name>`."""
    found = {}
    for d in of_kind(objects, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            if argv(c)[:2] == ["workers", "run"]:
                found[argv(c)[2]] = d
    return found


def config_data(objects, container: dict) -> dict[str, str]:
    """The container's effective environment from ConfigMaps and plain values (env wins)."""
    env = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            env.update(named(objects, "ConfigMap", ref["name"]).get("data", {}))
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
    return env


def secret_refs(container: dict) -> dict[str, dict]:
    """env name → secretKeyRef."""
    return {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})}


def port_number(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert numbers, f"container {container['name']} has no port named {port!r}"
    return numbers[0]


def quantity_bytes(q: str) -> int:
    units = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9}
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", str(q))
    assert m and m.group(2) in ("", *units), f"unexpected quantity {q!r}"
    return int(m.group(1)) * units.get(m.group(2), 1)


def secret_template() -> dict:
    return yaml.safe_load((K8S / "secret.template.yaml").read_text())


# ---- schemas -----------------------------------------------------------------------------
def test_overlays_dev_and_prod_exist():
    assert {"dev", "prod"} <= set(OVERLAYS)


def test_objects_are_valid_kubernetes(objects):
    """kubernetes-validate, strict: unknown or misplaced fields fail, not only wrong types."""
    errors = []
    for o in objects:
        if (o.get("apiVersion"), o.get("kind")) in CRD_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {exc.message} at {list(exc.path)}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


@functools.cache
def crd_validator(api_version: str, kind: str):
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_keda_objects_match_the_vendored_crd_schemas(objects):
    errors = []
    for o in objects:
        key = (o.get("apiVersion"), o.get("kind"))
        if key in CRD_SCHEMAS:
            errors += [f"{o['kind']}/{o['metadata']['name']}: {e.message} at {list(e.path)}"
                       for e in crd_validator(*key).iter_errors(o)]
    assert not errors, "\n".join(errors)


def test_vendored_schemas_refuse_a_typo():
    bad = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
           "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [], "cooldownPeriods": 1}}
    assert not crd_validator("keda.sh/v1alpha1", "ScaledObject").is_valid(bad)


# ---- namespace and labels ----------------------------------------------------------------
def test_everything_lives_in_the_restricted_namespace_app(objects):
    ns = named(objects, "Namespace", NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    elsewhere = [f"{o['kind']}/{o['metadata']['name']}" for o in objects
                 if o["kind"] != "Namespace" and o["metadata"].get("namespace") != NAMESPACE]
    assert not elsewhere


def test_pods_carry_the_recommended_labels(objects):
    for o, _ in workloads(objects):
        labels = pod_template(o)["metadata"]["labels"]
        assert labels.get("app.kubernetes.io/part-of") == "spotter", o["metadata"]["name"]
        assert labels.get("app.kubernetes.io/name"), o["metadata"]["name"]
        assert labels.get("app.kubernetes.io/component"), o["metadata"]["name"]


def test_one_image_for_everything_and_the_overlay_names_it(objects):
    images = {c["image"] for _, pod in workloads(objects) for c in pod["containers"]}
    assert len(images) == 1, images
    (image,) = images
    assert image != "spotter" and ":" in image.rsplit("/", 1)[-1], f"the overlay must set the image: {image}"


# ---- workers -----------------------------------------------------------------------------
def test_every_worker_has_its_deployment_and_every_deployment_a_real_worker(objects):
    deployments = worker_deployments(objects)
    assert set(deployments) == set(WORKERS), (
        f"missing Deployments: {sorted(set(WORKERS) - set(deployments))}; "
        f"Deployments of no worker: {sorted(set(deployments) - set(WORKERS))}")
    for name, d in deployments.items():
        assert d["metadata"]["name"] == f"worker-{name}"
        (container,) = d["spec"]["template"]["spec"]["containers"]
        assert argv(container) == ["workers", "run", name]
    others = {d["metadata"]["name"] for d in of_kind(objects, "Deployment")} - {f"worker-{w}" for w in WORKERS}
    assert others == {"ingress"}, f"Deployments that are neither a worker nor the ingress: {others}"


def test_each_worker_gets_its_database_and_the_broker(objects):
    for name, d in worker_deployments(objects).items():
        (container,) = d["spec"]["template"]["spec"]["containers"]
        refs = secret_refs(container)
        database = load(name).database
        assert f"{database.upper()}_DATABASE_URL" in refs, f"worker {name} needs its {database} database"
        assert "RABBITMQ_URL" in refs, name
        assert not {k for k in refs if k.endswith("_DATABASE_URL")} - {f"{database.upper()}_DATABASE_URL"}, (
            f"worker {name} gets another domain's database URL")


def test_worker_probes_hit_the_health_server(objects):
    for name, d in worker_deployments(objects).items():
        (c,) = d["spec"]["template"]["spec"]["containers"]
        port = int(config_data(objects, c).get("HEALTH_PORT", DEFAULT_HEALTH_PORT))
        for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path, f"{name} {probe}"
            assert port_number(c, get["port"]) == port, f"{name} {probe} port"
        if "startupProbe" in c:
            assert port_number(c, c["startupProbe"]["httpGet"]["port"]) == port
        annotations = d["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/port") == str(port) and annotations.get("prometheus.io/path") == "/metrics"


def test_worker_grace_period_outlasts_the_drain(objects):
    """SIGTERM drain may take 2 × DRAIN_TIMEOUT_S (workers/runtime/consumer.py): the pod must not be killed first."""
    for name, d in worker_deployments(objects).items():
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        drain = float(config_data(objects, c).get("DRAIN_TIMEOUT_S") or Config.drain_timeout_s)
        assert pod["terminationGracePeriodSeconds"] >= 2 * drain + 5, (
            f"{name}: grace {pod['terminationGracePeriodSeconds']} s, drain up to {2 * drain} s")


def test_transcode_drains_a_whole_job_on_its_own_scratch_volume(objects):
    d = worker_deployments(objects)["transcode"]
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = config_data(objects, c)
    timeout = float(env.get("TRANSCODE_TIMEOUT_S") or Limits.timeout_s)
    assert float(env["DRAIN_TIMEOUT_S"]) > timeout, "a job in flight at SIGTERM should be able to finish"
    scratch = env["TRANSCODE_TMPDIR"]
    assert env["TMPDIR"] == scratch
    mount = [m for m in c["volumeMounts"] if m["mountPath"] == scratch]
    assert mount, f"nothing mounted at {scratch}"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount[0]["name"]]
    size = quantity_bytes(volume["emptyDir"]["sizeLimit"])
    upload = int(env.get("MAX_UPLOAD_BYTES") or DEFAULT_MAX_UPLOAD_BYTES)
    output = int(env.get("TRANSCODE_MAX_OUTPUT_BYTES") or Limits.max_output_bytes)
    assert size > upload + output, "the scratch volume must hold a source and its rendition"
    threads = int(env["TRANSCODE_THREADS"])
    cpu_limit = c["resources"]["limits"]["cpu"]
    assert threads == int(cpu_limit), "x264 threads should follow the CPU limit"


# ---- ingress -----------------------------------------------------------------------------
def test_ingress_runs_gunicorn_with_probes_and_a_service(objects):
    d = named(objects, "Deployment", "ingress")
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert argv(c) == ["workers", "serve"]
    env = config_data(objects, c)
    port = int(env.get("PORT", 8080))
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert port_number(c, c[probe]["httpGet"]["port"]) == port
    multiproc = env["PROMETHEUS_MULTIPROC_DIR"]
    assert any(m["mountPath"] == multiproc for m in c["volumeMounts"]), "the multiprocess dir must be a volume"
    service = named(objects, "Service", "ingress")
    assert service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    (sp,) = service["spec"]["ports"]
    assert port_number(c, sp["targetPort"]) == port


def cpu_cores(q: str) -> float:
    q = str(q)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def test_ingress_runs_no_more_gevent_processes_than_its_cores(objects):
    # a gevent process uses one core: more processes than requested cores only contend
    (c,) = named(objects, "Deployment", "ingress")["spec"]["template"]["spec"]["containers"]
    processes = int(config_data(objects, c)["WEB_CONCURRENCY"])
    assert 1 <= processes <= max(1, cpu_cores(c["resources"]["requests"]["cpu"]))


def test_prod_scales_the_ingress_on_cpu():
    objects = render("prod")
    hpa = named(objects, "HorizontalPodAutoscaler", "ingress")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ingress"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2, "one pod down must not take the ingress with it"


# ---- every pod ---------------------------------------------------------------------------
def test_containers_are_non_root_read_only_and_restricted(objects):
    for o, pod in workloads(objects):
        who = f"{o['kind']}/{o['metadata']['name']}"
        psc = pod.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) > 0, who
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", who
        assert pod.get("automountServiceAccountToken") is False, who
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c.get("securityContext", {})
            assert sc.get("readOnlyRootFilesystem") is True, who
            assert sc.get("allowPrivilegeEscalation") is False, who
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], who
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, who
            assert sc.get("runAsUser", psc.get("runAsUser", 0)) > 0, who
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp, f"{who}: no writable /tmp"
            (volume,) = [v for v in pod["volumes"] if v["name"] == tmp[0]["name"]]
            assert "emptyDir" in volume, who


def test_containers_have_requests_and_a_memory_limit(objects):
    for o, pod in workloads(objects):
        for c in pod["containers"]:
            r = c.get("resources", {})
            assert {"cpu", "memory"} <= set(r.get("requests", {})), o["metadata"]["name"]
            assert "memory" in r.get("limits", {}), o["metadata"]["name"]


def test_no_duplicate_env_names(objects):
    for o, pod in workloads(objects):
        for c in pod["containers"]:
            names = [e["name"] for e in c.get("env", [])]
            assert len(names) == len(set(names)), f"{o['metadata']['name']}: {names}"


def test_config_maps_referenced_are_rendered(objects):
    maps = {m["metadata"]["name"] for m in of_kind(objects, "ConfigMap")}
    for o, pod in workloads(objects):
        for c in pod["containers"]:
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in maps, o["metadata"]["name"]


def test_every_deployment_has_a_disruption_budget(objects):
    pdbs = of_kind(objects, "PodDisruptionBudget")
    for d in of_kind(objects, "Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, f"{d['metadata']['name']}: {len(matching)} PodDisruptionBudgets"
        spec = matching[0]["spec"]
        assert "maxUnavailable" in spec or "minAvailable" in spec


# ---- migration -----------------------------------------------------------------------------
def test_migration_job_migrates_every_database(objects):
    jobs = [j for j in of_kind(objects, "Job")
            if any(argv(c)[:2] == ["workers", "migrate"] for c in j["spec"]["template"]["spec"]["containers"])]
    assert len(jobs) == 1
    pod = jobs[0]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert argv(c) == ["workers", "migrate", "--all"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    domains = sorted(p.name for p in (REPO / "migrations").iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert domains, "no migrations/<domain> folders"
    missing = {f"{d.upper()}_DATABASE_URL" for d in domains} - set(secret_refs(c))
    assert not missing, f"the migration Job lacks {sorted(missing)}"


def test_storage_setup_job_configures_the_bucket_with_the_storage_keys_only(objects):
    jobs = [j for j in of_kind(objects, "Job")
            if any(argv(c)[:3] == ["workers", "storage", "setup"] for c in j["spec"]["template"]["spec"]["containers"])]
    assert len(jobs) == 1
    pod = jobs[0]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert argv(c) == ["workers", "storage", "setup"]  # never --create: a typo in S3_BUCKET must fail, not make a bucket
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert set(secret_refs(c)) == {"S3_ACCESS_KEY", "S3_SECRET_KEY"}


# ---- retention -----------------------------------------------------------------------------
def test_prune_cronjob_prunes_every_database_and_the_bucket_never_twice_at_once(objects):
    (cron,) = [o for o in of_kind(objects, "CronJob") if o["metadata"]["name"] == "prune"]
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and len(spec["schedule"].split()) == 5
    job = spec["jobTemplate"]["spec"]
    (c,) = job["template"]["spec"]["containers"]
    assert argv(c) == ["workers", "prune", "--json"]  # every database; one JSON object per line
    assert job["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert job["activeDeadlineSeconds"] < 3600, "a run must end before the next hourly one is due"
    domains = sorted(p.name for p in (REPO / "migrations").iterdir() if p.is_dir() and not p.name.startswith("_"))
    needed = {f"{d.upper()}_DATABASE_URL" for d in domains} | {"S3_ACCESS_KEY", "S3_SECRET_KEY"}
    assert not needed - set(secret_refs(c)), f"the prune CronJob lacks {sorted(needed - set(secret_refs(c)))}"
    env = config_data(objects, c)
    assert {"S3_ENDPOINT_URL", "S3_BUCKET", "IDEMPOTENCY_RETENTION_S", "SOURCE_RETENTION_S"} <= set(env)


def test_the_configured_retentions_pass_prunes_own_check(objects):
    from shared.config import StorageConfig
    from workers.ops import retention as r

    (cron,) = [o for o in of_kind(objects, "CronJob") if o["metadata"]["name"] == "prune"]
    (c,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = config_data(objects, c)
    delays = tuple(int(d) for d in env.get("RETRY_DELAYS_S", "1,5,30,120").split(","))
    r.check(r.RetentionConfig.from_env(env), int(env.get("MAX_ATTEMPTS", Config.max_attempts)), delays,
            int(env.get("UPLOAD_URL_EXPIRY_S", StorageConfig.upload_expiry_s)))


# ---- secrets -------------------------------------------------------------------------------
def test_no_secret_is_rendered(objects):
    assert not of_kind(objects, "Secret"), "Secrets are created by operators from k8s/secret.template.yaml"


def test_secret_keys_used_are_in_the_template(objects):
    template = secret_template()
    assert template["kind"] == "Secret" and template["metadata"]["name"] == SECRET_NAME
    assert template["metadata"]["namespace"] == NAMESPACE
    keys = set(template["stringData"])
    used = set()
    for o, pod in workloads(objects):
        for c in pod["containers"]:
            for env, ref in secret_refs(c).items():
                assert ref["name"] == SECRET_NAME, f"{o['metadata']['name']} {env}"
                used.add(ref["key"])
    for auth in of_kind(objects, "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef", []):
            assert ref["name"] == SECRET_NAME
            used.add(ref["key"])
    assert used <= keys, f"keys missing from secret.template.yaml: {sorted(used - keys)}"


def test_secret_template_holds_no_real_value():
    template = secret_template()
    assert "data" not in template
    real = {k: v for k, v in template["stringData"].items() if v != "REPLACE_ME"}
    assert not real, f"secret.template.yaml must only hold REPLACE_ME: {sorted(real)}"
    for kustomization in K8S.rglob("kustomization.yaml"):
        listed = yaml.safe_load(kustomization.read_text()).get("resources", [])
        assert not [r for r in listed if "secret.template" in r], kustomization


# ---- KEDA ----------------------------------------------------------------------------------
def test_prod_scales_workers_with_keda():
    assert "prod" in KEDA_OVERLAYS, "the prod overlay must include components/keda"
    assert of_kind(render("prod"), "ScaledObject")


def test_overlays_without_keda_render_no_keda_object(objects):
    if not of_kind(objects, "ScaledObject"):
        assert not of_kind(objects, "TriggerAuthentication")
        assert all("replicas" in d["spec"] for d in of_kind(objects, "Deployment"))


def test_each_worker_scales_on_its_queue_counting_unacked(autoscaled):
    objects = autoscaled
    scaled = of_kind(objects, "ScaledObject")
    by_target = {s["spec"]["scaleTargetRef"]["name"]: s for s in scaled}
    deployments = worker_deployments(objects)
    assert set(by_target) == {d["metadata"]["name"] for d in deployments.values()}
    auths = {a["metadata"]["name"]: a for a in of_kind(objects, "TriggerAuthentication")}
    for name, d in deployments.items():
        s = by_target[d["metadata"]["name"]]
        assert s["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        assert "replicas" not in d["spec"], f"worker-{name}: spec.replicas would fight KEDA's HPA"
        (trigger,) = s["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "rabbitmq"
        assert meta["queueName"] == name  # shared/topology.py QueueNames(name).main
        assert meta["mode"] == "QueueLength"
        # the management API's count is ready + unacked; amqp would count ready messages only
        assert meta["protocol"] == "http"
        assert meta.get("excludeUnacknowledged", "false") == "false"
        auth = auths[trigger["authenticationRef"]["name"]]
        hosts = [r for r in auth["spec"]["secretTargetRef"] if r["parameter"] == "host"]
        assert [r["key"] for r in hosts] == ["RABBITMQ_MANAGEMENT_URL"]
        if load(name).queries:
            assert s["spec"].get("minReplicaCount", 0) >= 1, f"{name} answers reads: never scale it to zero"
        if load(name).background:  # the reminder scheduler: work no queue message wakes
            assert s["spec"].get("minReplicaCount", 0) >= 1, f"{name} works on its own: never scale it to zero"


def test_transcode_cools_down_longer_than_the_others(autoscaled):
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s["spec"] for s in of_kind(autoscaled, "ScaledObject")}

    def window(spec):
        return spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]

    transcode = scaled.pop("worker-transcode")
    assert transcode["cooldownPeriod"] > max(s.get("cooldownPeriod", 300) for s in scaled.values())
    assert window(transcode) > max(window(s) for s in scaled.values())


# ---- image ---------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (K8S / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_as_the_manifests_non_root_user(objects):
    final = dockerfile_instructions()
    final = final[max(i for i, (w, _) in enumerate(final) if w == "FROM"):]  # the last stage
    assert final[0][1].startswith("python:3.11-slim")
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the image must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric non-root uid (runAsNonRoot cannot check a name)"
    for o, pod in workloads(objects):
        assert pod["securityContext"]["runAsUser"] == int(uid), o["metadata"]["name"]
    entry = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["workers"]


def test_dockerfile_ships_ffmpeg_and_finds_the_migrations():
    steps = dockerfile_instructions()
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "ffmpeg" in runs and "pip install ." in runs
    env = " ".join(rest for word, rest in steps if word == "ENV")
    m = re.search(r"MIGRATIONS_DIR=(\S+)", env)
    assert m, "the installed package cannot find migrations/ without MIGRATIONS_DIR (workers/ops/migrate.py)"
    copies = [shlex.split(rest) for word, rest in steps if word == "COPY"]
    assert ["migrations", m.group(1)] in copies


def test_dockerignore_keeps_what_the_build_needs():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for needed in ("setup.cfg", "pyproject.toml", "README.md", "shared", "ingress", "workers", "migrations"):
        assert needed not in ignored, needed
    assert {".venv", ".git", ".env"} <= ignored
