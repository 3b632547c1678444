"""MkDocs hook: the examples run in a fresh temporary folder, so files they write (model
files, trajectories, databases) never land in the checkout; the folder goes at the end."""

from __future__ import annotations

import os
import shutil
import tempfile

_state: dict[str, str] = {}


def on_pre_build(config, **kwargs) -> None:
    _state["home"] = os.getcwd()
    _state["work"] = tempfile.mkdtemp(prefix="ase-mpnn-docs-")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.chdir(_state["work"])


def on_post_build(config, **kwargs) -> None:
    os.chdir(_state.pop("home"))
    shutil.rmtree(_state.pop("work"), ignore_errors=True)


def on_build_error(error, **kwargs) -> None:
    if "home" in _state:
        on_post_build(None)
