"""D3 reference data and damping parameters, read from the installed ``tad-dftd3`` package.

The tables are the published D3 ones (Grimme, Antony, Ehrlich, Krieg, J. Chem. Phys. 132,
154104, 2010: reference C6 coefficients of up to 7 reference systems per element with their
coordination numbers, covalent radii, <r^4>/<r^2> expectation values) and the rational
(Becke-Johnson) damping parameters per functional (Grimme, Ehrlich, Goerigk, J. Comput.
Chem. 32, 1456, 2011, and later fits), as tad-dftd3 (Apache-2.0) ships them: the parameter
file is vendored verbatim from simple-dftd3, the reference program the tests compare with.
They are read from that package at run time rather than copied here: nothing to keep in
sync, no 4 MB table in this package, and the licence travels with the data.

Units: the tables are in atomic units (Bohr, Hartree); ``d3_tables`` converts them once to
Angstrom and eV with ``ase.units.Bohr`` and ``ase.units.Hartree``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from ase.units import Bohr, Hartree

#: the real-space cutoffs of simple-dftd3 (its defaults, in Bohr, converted to Angstrom):
#: two-body dispersion 60 a0, three-body 40 a0, coordination numbers 40 a0
DISP2_CUTOFF = 60.0 * Bohr
DISP3_CUTOFF = 40.0 * Bohr
CN_CUTOFF = 40.0 * Bohr
#: steepness of the D3 counting function and of the Gaussian CN weighting (Grimme 2010)
K1_COUNTING = 16.0
K3_WEIGHTING = 4.0
#: the last element D3 has reference data for (Lr); the tables are indexed by Z
MAX_Z = 103


class D3Tables(NamedTuple):
    """D3 reference data indexed by atomic number Z (row 0 unused), in eV and Angstrom.

    Attributes:
        c6: (104, 104, 7, 7) reference C6_AB of reference systems (a, b), eV A^6.
        cn: (104, 7) reference coordination numbers, -1 where a reference is missing.
        rcov: (104,) covalent radii (4/3 of Pyykko's, as D3 uses), Angstrom.
        r4r2: (104,) sqrt(0.5 <r^4>/<r^2> sqrt(Z)), Angstrom (C8 = 3 C6 r4r2_A r4r2_B).
        rvdw: (104, 104) D3 pair van der Waals radii (the three-body damping's), Angstrom.
    """

    c6: torch.Tensor
    cn: torch.Tensor
    rcov: torch.Tensor
    r4r2: torch.Tensor
    rvdw: torch.Tensor


class D3Parameters(NamedTuple):
    """Rational-damping parameters of one functional (s-dftd3's names), lengths in Angstrom.

    E = -sum_pairs s6 C6 / (r^6 + R0^6) + s8 C8 / (r^8 + R0^8), R0 = a1 sqrt(C8/C6) + a2;
    s9 scales the three-body (ATM) term, alp its zero-damping exponent.
    """

    functional: str
    s6: float
    s8: float
    a1: float
    a2: float
    s9: float
    alp: float


def _require_tad():
    try:
        import tad_dftd3  # noqa: F401
        from tad_mctc.data import radii
    except ImportError as exc:  # a dependency, but say what to do if it is missing
        raise ImportError("D3 dispersion needs the tad-dftd3 package: "
                          "pip install 'tad-dftd3>=0.7'") from exc
    return tad_dftd3, radii


@functools.lru_cache(maxsize=None)
def _tables_float64() -> D3Tables:
    tad, radii = _require_tad()
    from tad_dftd3.reference import Reference

    ref = Reference(dtype=torch.float64, device=torch.device("cpu"))
    n = ref.c6.shape[0]  # 104: Z = 0 (dummy) .. 103
    return D3Tables(
        c6=ref.c6 * (Hartree * Bohr**6),
        cn=ref.cn.clone(),
        rcov=radii.COV_D3(dtype=torch.float64)[:n] * Bohr,
        r4r2=tad.data.R4R2(dtype=torch.float64)[:n] * Bohr,
        rvdw=radii.VDW_PAIRWISE(dtype=torch.float64)[:n, :n] * Bohr,
    )


_DEVICE_TABLES: dict[tuple, D3Tables] = {}


def d3_tables(dtype: torch.dtype = torch.float64,
              device: torch.device | str = "cpu") -> D3Tables:
    """The D3 tables (see D3Tables) on ``device`` in ``dtype``, converted once and cached."""
    key = (dtype, str(device))
    if key not in _DEVICE_TABLES:
        _DEVICE_TABLES[key] = D3Tables(*(t.to(device=device, dtype=dtype)
                                         for t in _tables_float64()))
    return _DEVICE_TABLES[key]


@functools.lru_cache(maxsize=None)
def _functionals() -> tuple[dict, dict]:
    """(parameters.toml's "parameter" table, alias table), from tad-dftd3."""
    _require_tad()
    from tad_dftd3.param import functional

    return functional._load_parameters(), functional._load_aliases()


def list_functionals() -> list[str]:
    """The functionals with rational-damping (D3(BJ)) parameters, sorted."""
    data, _ = _functionals()
    return sorted(name for name, entry in data["parameter"].items() if "bj" in entry.get("d3", {}))


def d3bj_parameters(functional: str, three_body: bool = False) -> D3Parameters:
    """D3(BJ) damping parameters of ``functional`` (case and hyphens ignored; s-dftd3's
    aliases such as "b3lyp5" or "pbeh" resolve), s9 = 1 with ``three_body`` else 0.

    Raises ValueError naming the functional and some valid ones.
    """
    data, aliases = _functionals()
    name = str(functional).lower().replace("-", "")
    name = aliases.get(name, name)
    entry = data["parameter"].get(name, {}).get("d3", {}).get("bj")
    if entry is None:
        valid = list_functionals()
        common = [v for v in ("pbe", "pbe0", "b3lyp", "tpss", "r2scan", "revpbe") if v in valid]
        raise ValueError(
            f"no D3(BJ) parameters for functional {functional!r}; valid ones include "
            f"{', '.join(common)} ({len(valid)} in all: ase_mpnn.dispersion.list_functionals())")
    merged = {**data["default"]["parameter"]["d3"]["bj"], **entry}
    return D3Parameters(
        functional=name, s6=float(merged["s6"]), s8=float(merged["s8"]),
        a1=float(merged["a1"]), a2=float(merged["a2"]) * Bohr,  # a2 is given in Bohr
        s9=float(merged["s9"]) if three_body else 0.0, alp=float(merged["alp"]))
