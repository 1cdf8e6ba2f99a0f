"""setup.cfg says what the project needs; constraints.txt pins what bin/bootstrap and the image
install. They must agree, or an install resolves to something the code was never tested with."""
from __future__ import annotations

import configparser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def declared() -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    lines += [line for extra in cfg["options.extras_require"].values() for line in extra.splitlines()]
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


def pinned() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_every_declared_dependency_is_pinned_within_its_range():
    pins = pinned()
    problems = []
    for req in declared():
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name}: not in constraints.txt")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}: constraints.txt pins {version}, setup.cfg wants {req.specifier}")
    assert problems == []


def test_pika_is_bounded_above_because_its_internals_are_used():
    (pika,) = [r for r in declared() if r.name == "pika"]
    assert any(spec.operator == "<" for spec in pika.specifier)  # shared/pika_internals.py
