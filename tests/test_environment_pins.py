"""The package's dependencies are what it imports, the optional stacks are extras, and environment.yml agrees."""

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions

import yaml

from clipeval.paths import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "src" / "clipeval"


def _name(requirement: str) -> str:
    return requirement.split("==")[0].split("[")[0].lower().replace("_", "-")


def _pins(requirements) -> dict[str, str]:
    return {_name(line): line.split("==")[1] for line in requirements}


def _project() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]


def _imports() -> dict[str, bool]:
    """Every third-party top-level module the package imports -> whether some module imports it at its top level.

    ``require("module", ...)`` (an extra's lazy import) counts as an import inside a function.
    """
    found: dict[str, bool] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "require"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                names = [node.args[0].value]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                if root != "clipeval" and root not in sys.stdlib_module_names and root != "__future__":
                    found[root] = found.get(root, False) or id(node) in top_level
    return found


def _distributions(modules) -> set[str]:
    mapping = packages_distributions()
    return {_name(distribution) for module in modules for distribution in mapping[module]}


def test_environment_yml_matches_pyproject():
    project = _project()
    everything = [*project["dependencies"], *(line for extra in project["optional-dependencies"].values()
                                              for line in extra)]
    environment = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())["dependencies"]
    pip_section = next(item["pip"] for item in environment if isinstance(item, dict))
    assert all("==" in line for line in everything), "every dependency is pinned with =="
    assert _pins(everything) == _pins(pip_section)


def test_the_package_depends_on_what_it_imports_and_imports_extras_only_where_used():
    project = _project()
    core = set(_pins(project["dependencies"]))
    extras = {_name(line) for lines in project["optional-dependencies"].values() for line in lines}
    imports = _imports()
    imported = _distributions(imports)
    assert imported - core - extras == set(), "imported but not declared"
    assert core - imported == set(), "declared as a dependency but never imported: an extra, or not needed"
    at_top = _distributions(module for module, top in imports.items() if top)
    assert at_top & (extras - core) == set(), "an extra imported at a module's top level breaks the plain install"
    assert _distributions(["papermill", "nbconvert", "ray"]) <= extras
