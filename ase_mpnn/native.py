"""ase-mpnn's native (C++) CPU kernels: built once per machine, used when built.

The kernels, registered as ``torch.ops.ase_mpnn.*``:

- ``csrc/filter_sum.cpp`` fuses the gather-multiply-sum of SchNet-like convolutions
  (``ase_mpnn.nn.filter_sum``);
- ``csrc/cell_list.cpp`` builds full neighbour lists sorted by centre
  (``ase_mpnn.graph.neighbors``, backend ``native``);
- ``csrc/edge_pairs.cpp`` pairs each edge of such a list with its reverse
  (``ase_mpnn.nn.edge_pairs``).

They are an optional speed-up: every model has a plain torch path that gives the same
numbers and every list the vesin or matscipy backend that gives the same pairs, which run
wherever the kernels are not built.

Building needs a C++ compiler and ninja, and takes about 20 s: ``ase-mpnn kernels
--build`` (``make install`` runs it). The environment variable ``ASE_MPNN_KERNELS`` sets
the policy:

- ``auto`` (the default): use the kernels when they are built, never build them silently;
- ``build``: build them at first use when they are not built yet;
- ``off``: never use them.

The library is kept in the cache folder (``ase_mpnn._cache``) under ``kernels/``, with a
name made from the source, the torch version, the compiler flags and the CPU's
instruction sets, so a changed source, another torch or another CPU (``-march=native``)
gets its own build and never a stale one. It is built in a private folder and moved into
place in one step, so processes that build at once never load half a file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import tempfile
import warnings
from pathlib import Path

import torch

from ._cache import cache_dir
from .errors import ASEMPNNError

MODE_ENV = "ASE_MPNN_KERNELS"
MODES = ("auto", "build", "off")
SOURCES = tuple(Path(__file__).with_name("csrc") / name
                for name in ("filter_sum.cpp", "cell_list.cpp", "edge_pairs.cpp"))
CFLAGS = ("-O3", "-march=native", "-fopenmp")  # at::parallel_for is OpenMP in torch's CPU builds
LDFLAGS = ("-fopenmp",)  # torch's own libgomp.so.1 is loaded already: one OpenMP runtime

_loaded: dict[str, Path] = {}  # "path": the library loaded into this process
_failed: dict[str, str] = {}  # "reason": why loading or building failed in this process


class KernelBuildError(ASEMPNNError, RuntimeError):
    """The native kernels could not be built or loaded (the plain torch path still runs)."""


def mode() -> str:
    """The policy from ``$ASE_MPNN_KERNELS`` (see the module's docstring)."""
    value = os.environ.get(MODE_ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{MODE_ENV}={value!r}: choose one of {', '.join(MODES)}")
    return value


def library_path() -> Path:
    """Where this machine's build of the kernels for this torch is (or will be) kept."""
    return cache_dir() / "kernels" / f"ase_mpnn_kernels_{_build_key(torch.__version__)}.so"


@functools.lru_cache(maxsize=4)
def _build_key(torch_version: str) -> str:
    """16 hex digits of the source, torch version, flags and CPU (read once per process:
    ``available`` runs on every SchNet call)."""
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.read_bytes())
    for part in (torch_version, " ".join(CFLAGS + LDFLAGS), platform.machine(), _cpu_flags()):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


def available() -> bool:
    """True when the kernels are loaded in this process and the policy is not ``off``,
    loading (or, under the ``build`` policy, building) them on the first call; False when
    they are not built, or when building or loading failed (with one warning that says
    why)."""
    policy = mode()  # read on every call: ``off`` turns loaded kernels off too
    if policy == "off":
        return False
    if _loaded or _failed:
        return bool(_loaded)
    path = library_path()
    try:
        if path.exists():
            _load(path)
        elif policy == "build":
            build()
        else:
            return False
    except KernelBuildError as err:
        _failed["reason"] = str(err)
        warnings.warn(f"{err}; the plain torch path runs instead", RuntimeWarning,
                      stacklevel=2)
        return False
    return True


def build(verbose: bool = False) -> Path:
    """Build the kernels (unless built) and load them; returns the library's path.

    Raises:
        KernelBuildError: no compiler or ninja, or the build or the load failed.
    """
    target = library_path()
    if target.exists():
        _load(target)
        return target
    from torch.utils.cpp_extension import load

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="build-") as folder:
        try:
            built = load(target.stem, [str(s) for s in SOURCES], extra_cflags=list(CFLAGS),
                         extra_ldflags=list(LDFLAGS),
                         build_directory=folder, is_python_module=False, verbose=verbose)
        except (RuntimeError, OSError, ImportError) as err:
            raise KernelBuildError(f"building ase-mpnn's native kernels failed: {err}") from err
        os.replace(built, target)  # the library stays loaded from its new place
    _loaded["path"] = target
    return target


def status() -> dict[str, str | bool]:
    """What ``ase-mpnn kernels`` prints: the policy, the library's path, whether it is
    built and loaded, and why not."""
    path = library_path()
    loaded = available()
    return {"policy": mode(), "library": str(path), "built": path.exists(), "loaded": loaded,
            "problem": _failed.get("reason", "")}


def _load(path: Path) -> None:
    """Load a built library into this process (registers ``torch.ops.ase_mpnn.*``)."""
    try:
        torch.ops.load_library(str(path))
    except (OSError, RuntimeError) as err:
        raise KernelBuildError(
            f"loading ase-mpnn's native kernels from {path} failed ({err}); delete the file "
            "and run `ase-mpnn kernels --build` to rebuild them") from err
    _loaded["path"] = path


def _cpu_flags() -> str:
    """The CPU's instruction-set flags (Linux), else its name: part of the build's key."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
