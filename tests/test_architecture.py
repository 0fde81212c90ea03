"""The package's structural rules that import-linter cannot check (docs/architecture.md)."""

import ast
import json
import re
from collections import defaultdict
from pathlib import Path

import clipeval
from clipeval import layout
from clipeval.jobs.registry import JOBS
from clipeval.paths import NOTEBOOKS_DIR

PACKAGE = Path(clipeval.__file__).parent
LAYOUTS = (layout.RunLayout, layout.CurationLayout, layout.IndexLayout, layout.EvalsetLayout, layout.FinetuneLayout)


def public_definitions(package: Path = PACKAGE) -> dict[str, list[str]]:
    """Every public top-level function and class name of the package, with the modules defining it."""
    found = defaultdict(list)
    for path in sorted(package.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            public = not node.name.startswith("_") if hasattr(node, "name") else False
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and public:
                found[node.name].append(path.relative_to(package).as_posix())
    return found


def test_no_two_public_names_in_the_package_are_the_same():
    shared = {name: modules for name, modules in public_definitions().items() if len(modules) > 1}
    assert shared == {}, "one name for two things: rename one so that each says what it is"


def test_the_name_check_sees_a_name_defined_twice(tmp_path):
    (tmp_path / "a.py").write_text("def search():\n    pass\n")
    (tmp_path / "b.py").write_text("class Search:\n    pass\n\n\ndef search():\n    pass\n\n\n"
                                   "def _search():\n    pass\n")
    assert public_definitions(tmp_path) == {"search": ["a.py", "b.py"], "Search": ["b.py"]}


def declared_files() -> set[str]:
    """The file names the layouts declare (those with a suffix: folders are not checked)."""
    return {value.parts[-1] for klass in LAYOUTS for base in klass.__mro__ for value in vars(base).values()
            if isinstance(value, layout._File) and "." in value.parts[-1]}


def typed_file_names(package: Path = PACKAGE, names: set[str] | None = None) -> list[str]:
    """Where a module other than the layout types a declared file name in code: a string (not a docstring) that
    is the name, or holds ``/name``."""
    names = declared_files() if names is None else names
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "layout.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for name in names:
                    if node.value == name or f"/{name}" in node.value:
                        found.append(f"{path.relative_to(package)}:{node.lineno}: {name}")
    return found


def test_no_module_but_the_layout_types_an_output_file_name():
    assert typed_file_names() == []


def test_the_file_name_check_sees_a_typed_name(tmp_path):
    (tmp_path / "step.py").write_text('path = run_dir / "results.csv"\nother = f"{run_dir}/metrics.csv"\n'
                                      'fine = "a results.csv-like name in prose"\n"""results.csv: described"""\n')
    assert typed_file_names(tmp_path, {"results.csv", "metrics.csv"}) == ["step.py:1: results.csv",
                                                                         "step.py:2: metrics.csv"]


def notebook_steps(notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, set[str]]:
    """The ``steps.<job>(`` calls of each notebook's code cells."""
    calls = {}
    for path in sorted(notebooks_dir.glob("*.ipynb")):
        code = "\n".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"]
                         if cell["cell_type"] == "code")
        calls[path.stem] = set(re.findall(r"\bsteps\.(\w+)\(", code))
    return calls


def test_every_notebook_runs_its_jobs_through_the_steps_as_the_registry_declares():
    declared = {notebook: {name for name, job in JOBS.items() if notebook in job.notebooks}
                for notebook in notebook_steps()}
    assert notebook_steps() == declared
    assert all(calls for calls in notebook_steps().values()), "a notebook that runs no job"
