"""The folder where ase-mpnn keeps what it builds once per machine: compiled models
(``ase_mpnn.compiled_cache``) and native kernels (``ase_mpnn.native``).

``$ASE_MPNN_CACHE``, else ``$XDG_CACHE_HOME/ase-mpnn``, else ``~/.cache/ase-mpnn``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder (see the module's docstring); it need not exist yet."""
    if os.environ.get("ASE_MPNN_CACHE"):
        return Path(os.environ["ASE_MPNN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ase-mpnn"
