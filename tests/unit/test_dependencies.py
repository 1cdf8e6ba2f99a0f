"""setup.cfg (and pyproject.toml's build requirements) say what the project needs; the hashed locks
say what bin/bootstrap, CI and the image install (bin/lock writes them). They must agree, or an
install resolves to something the code was never tested with, or fails on a machine that is not
this one."""
from __future__ import annotations

import configparser
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK, RUNTIME_LOCK, MINISTACK_LOCK = "requirements.lock", "requirements-runtime.lock", "requirements-ministack.lock"


@dataclass
class Pin:
    version: str
    hashes: set[str] = field(default_factory=set)


def read_lock(name: str) -> dict[str, Pin]:
    """`name==version \\` lines, each followed by its `--hash=sha256:…` lines, as uv writes them."""
    pins: dict[str, Pin] = {}
    current = None
    for line in (REPO / name).read_text().splitlines():
        text = line.strip().rstrip("\\").strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("--hash="):
            assert current is not None, f"{name}: a hash before any package"
            current.hashes.add(text.removeprefix("--hash="))
            continue
        assert not line[0].isspace() and not text.startswith("-"), f"{name}: unexpected line {line!r}"
        req = Requirement(text)
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.marker, f"{name}: {text!r} is not pinned with =="
        assert canonicalize_name(req.name) not in pins, f"{name}: {req.name} twice"
        current = pins[canonicalize_name(req.name)] = Pin(spec.version)
    return pins


def _requirements(text: str) -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return [Requirement(line) for line in lines if line]


def install_requires() -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return _requirements(cfg["options"]["install_requires"])


def extras() -> dict[str, list[Requirement]]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return {name: _requirements(text) for name, text in cfg["options.extras_require"].items()}


def build_requires() -> list[Requirement]:
    """The project installs with --no-build-isolation from its locked build backend."""
    with open(REPO / "pyproject.toml", "rb") as f:
        return [Requirement(r) for r in tomllib.load(f)["build-system"]["requires"]]


def closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution these requirements pull in, read from the installed packages' metadata
    (this interpreter is CPython 3.11 on Linux, the locks' target)."""
    wanted: dict[str, set[str]] = {}
    todo = list(requirements)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in wanted and set(req.extras) <= wanted[name]:
            continue
        wanted.setdefault(name, set()).update(req.extras)
        for line in metadata.distribution(name).requires or []:
            dep = Requirement(line)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in {"", *wanted[name]}):
                todo.append(dep)
    return set(wanted)


def unpinned(requirements: list[Requirement], pins: dict[str, Pin], lock: str) -> list[str]:
    problems = []
    for req in requirements:
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name}: not in {lock} (run bin/lock)")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{req.name}: {lock} pins {pin.version}, setup.cfg wants {req.specifier} (run bin/lock)")
    return problems


@pytest.mark.parametrize("lock", [LOCK, RUNTIME_LOCK, MINISTACK_LOCK])
def test_every_lock_entry_is_pinned_and_hashed(lock):
    pins = read_lock(lock)
    assert pins
    assert [name for name, pin in pins.items() if not pin.hashes] == []
    assert all(h.startswith("sha256:") for pin in pins.values() for h in pin.hashes)


def test_every_declared_dependency_is_pinned_in_the_lock_within_its_range():
    declared = install_requires() + [r for reqs in extras().values() for r in reqs] + build_requires()
    assert unpinned(declared, read_lock(LOCK), LOCK) == []


def test_the_runtime_lock_is_the_lock_without_the_test_extra():
    lock, runtime = read_lock(LOCK), read_lock(RUNTIME_LOCK)
    assert unpinned(install_requires() + build_requires(), runtime, RUNTIME_LOCK) == []
    assert {name: pin for name, pin in runtime.items() if lock.get(name) != pin} == {}
    assert "pytest" not in runtime  # the image carries no test tools


def test_each_lock_holds_exactly_what_its_requirements_pull_in():
    lock = read_lock(LOCK)
    stale = {name: pin.version for name, pin in lock.items()
             if _installed_version(name) != pin.version}
    assert stale == {}, "the virtualenv is not the lock: run bin/bootstrap"
    everything = install_requires() + [r for reqs in extras().values() for r in reqs] + build_requires()
    assert set(lock) == closure(everything)
    assert set(read_lock(RUNTIME_LOCK)) == closure(install_requires() + build_requires())


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_the_local_s3_server_is_locked_too():
    assert "ministack" in read_lock(MINISTACK_LOCK)


def test_pika_is_bounded_above_because_its_internals_are_used():
    (pika,) = [r for r in install_requires() if r.name == "pika"]
    assert any(spec.operator == "<" for spec in pika.specifier)  # shared/pika_internals.py


def test_bootstrap_and_the_image_install_from_the_locks_with_hashes():
    bootstrap = (REPO / "bin" / "bootstrap").read_text()
    dockerfile = (REPO / "k8s" / "Dockerfile").read_text()
    assert 'install_locked .venv requirements.lock' in bootstrap
    assert 'install_locked $venv requirements-ministack.lock' in bootstrap
    assert '--require-hashes -r "$lock"' in bootstrap
    assert "pip install --require-hashes -r requirements-runtime.lock" in dockerfile
    # the project itself adds nothing: its dependencies and build backend came from the lock
    assert "pip install -q --no-deps --no-build-isolation -e ." in bootstrap
    assert "pip install . --no-deps --no-build-isolation" in dockerfile
