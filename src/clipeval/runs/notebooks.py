"""Run the narrative notebooks headlessly with papermill for one profile (``params/<profile>.yaml``).

Each notebook receives the profile's values for the parameters its tagged ``parameters`` cell
declares (others are not injected) and is saved, executed, under ``<run_dir>/notebooks/``.
Relative paths in a profile are resolved from the project root, where the notebooks run.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from clipeval.extras import require
from clipeval.models.hub_mirror import using_mirror
from clipeval.paths import NOTEBOOKS_DIR, PROJECT_ROOT
from clipeval.profiles import check_profile, load_profile
from clipeval.runs.errors import NotebookFailed


def notebook_parameters(notebook: Path, params: dict) -> dict:
    """The subset of ``params`` that ``notebook``'s tagged parameters cell declares."""
    papermill = require("papermill", "notebooks", "running notebooks")
    declared = papermill.inspect_notebook(str(notebook))
    return {name: value for name, value in params.items() if name in declared}


def run_notebooks(profile: str | Path, checkpoints: list[str] | None = None,
                  notebooks_dir: Path = NOTEBOOKS_DIR, cwd: Path = PROJECT_ROOT) -> list[Path]:
    """Execute the profile's notebooks in order; stop at the first failure.

    A profile with ``hub_mirror`` (the rehearsal) runs every notebook against that mirror, offline
    (:func:`clipeval.models.hub_mirror.using_mirror`).

    Args:
        profile: profile name (``offline``, ``paper``) or path to a YAML file.
        checkpoints: optional override of the profile's checkpoint list.
        notebooks_dir: where the source notebooks are.
        cwd: working directory the notebooks run in (relative paths resolve from it).

    Returns:
        Paths of the executed notebooks.

    Raises:
        NotebookFailed: a notebook raised; its executed copy (with the error) is kept.
        FileNotFoundError: the profile names a ``hub_mirror`` that is not built.
        ValueError: the profile has an unknown key, a value of the wrong kind or misses a required key
            (:func:`clipeval.profiles.check_profile`).
    """
    params = load_profile(profile, checkpoints)
    check_profile(params, notebooks_dir, f"profile {profile}")
    out_dir = Path(cwd) / params["run_dir"] / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    mirror = params.get("hub_mirror")
    with using_mirror(Path(cwd) / mirror) if mirror else contextlib.nullcontext():
        return _execute(params, notebooks_dir, out_dir, cwd)


def _execute(params: dict, notebooks_dir: Path, out_dir: Path, cwd: Path) -> list[Path]:
    papermill = require("papermill", "notebooks", "running notebooks")
    executed = []
    with tempfile.TemporaryDirectory(prefix="clipeval-kernel-") as socket_dir:
        kernel_manager = _ipc_kernel_manager(Path(socket_dir))
        for name in params["notebooks"]:
            executed.append(_execute_one(papermill, notebooks_dir / f"{name}.ipynb", params, out_dir, cwd,
                                         kernel_manager))
    return executed


def _execute_one(papermill, source: Path, params: dict, out_dir: Path, cwd: Path, kernel_manager: type) -> Path:
    """Execute one notebook into ``out_dir``; a failing cell raises :class:`NotebookFailed`."""
    target = out_dir / source.name
    try:
        papermill.execute_notebook(str(source), str(target), parameters=notebook_parameters(source, params),
                                   cwd=str(cwd), kernel_name="python3", progress_bar=False,
                                   kernel_manager_class=kernel_manager)
    except papermill.PapermillExecutionError as error:
        raise NotebookFailed(f"{source.name} failed: {error.ename}: {error.evalue.strip()} "
                             f"(executed copy: {target})") from None
    return target


def _ipc_kernel_manager(socket_dir: Path) -> type:
    """A kernel manager whose kernel talks over socket files in ``socket_dir``, not unencrypted TCP ports.

    Over TCP, any local user could listen to the code and outputs on the loopback ports (the
    kernel warns so at start-up). ``socket_dir`` is a private temporary folder (mode 0700), so
    two runs in one working directory never share a socket name.
    """
    manager = require("jupyter_client.manager", "notebooks", "running notebooks")
    traitlets = require("traitlets", "notebooks", "running notebooks")

    class IpcKernelManager(manager.AsyncKernelManager):
        transport = traitlets.CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        def _ip_default(self) -> str:
            return str(socket_dir / "kernel")

    return IpcKernelManager
