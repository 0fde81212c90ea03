"""environment.yml (conda) and pyproject.toml (pip) name the same packages at the same versions."""

import tomllib

import yaml

from clipeval.paths import PROJECT_ROOT


def _pins(requirements):
    return {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1] for line in requirements}


def test_environment_yml_matches_pyproject():
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    environment = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())["dependencies"]
    pip_section = next(item["pip"] for item in environment if isinstance(item, dict))
    assert all("==" in line for line in pyproject), "every dependency is pinned with =="
    assert _pins(pyproject) == _pins(pip_section)
