"""CI installs from constraints.txt: every dependency the project names is pinned there."""

import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    with open(os.path.join(ROOT, "constraints.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                name, _, version = line.partition("==")
                assert version, f"constraints.txt: {line!r} is not pinned with =="
                pins[_norm(name.split("[")[0])] = version
    return pins


def test_every_dependency_and_extra_ci_installs_is_pinned():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    extras = project["optional-dependencies"]
    wanted = list(project["dependencies"])
    for extra in ("photos", "onnx", "browser", "dev"):
        wanted += [d for d in extras[extra] if not d.startswith("pairviz-jax")]
    pins = _pins()
    for requirement in wanted:
        name = _norm(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0])
        assert name in pins, f"{name} ({requirement}) is not pinned in constraints.txt"


def test_ci_installs_with_the_constraints_and_prints_what_it_resolved():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = f.read()
    assert "-c constraints.txt" in ci and "pip freeze" in ci
