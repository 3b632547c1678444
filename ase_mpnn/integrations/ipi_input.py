"""i-PI input files for a structure served by ``ase-mpnn serve`` over a UNIX socket.

One builder for the tests, the workflow, the benchmark and the documentation, so that the
socket, the initialisation from an ASE-readable file and the units stay the same
everywhere. i-PI's input reference: https://ipi-code.org (``<simulation>``).

    >>> xml = ipi_input("cu", steps=100, motion=dynamics("nve", timestep_fs=1.0))
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["dynamics", "ipi_input"]


def dynamics(mode: str, timestep_fs: float, thermostat_tau_fs: float | None = None) -> str:
    """``<dynamics>`` of i-PI's ``<motion mode='dynamics'>``: ``mode`` "nve", "nvt", ...;
    a PILE-L thermostat (Ceriotti et al. 2010) of time constant ``thermostat_tau_fs``."""
    thermostat = ("" if thermostat_tau_fs is None else
                  f"\n        <thermostat mode='pile_l'><tau units='femtosecond'>"
                  f"{thermostat_tau_fs}</tau></thermostat>")
    return (f"<dynamics mode='{mode}'>\n        <timestep units='femtosecond'>{timestep_fs}"
            f"</timestep>{thermostat}\n      </dynamics>")


def ipi_input(socket: str, *, steps: int, motion: str, temperature_K: float = 300.0,
              nbeads: int = 1, properties: Sequence[str] = ("step", "conserved", "potential"),
              properties_stride: int = 1, trajectory_stride: int | None = None,
              prefix: str = "sim", seed: int = 12345, structure: str = "init.extxyz",
              timeout_s: float | None = None, verbosity: str = "low") -> str:
    """The XML of an i-PI simulation served on the UNIX socket ``socket``.

    Args:
        socket: socket name (``/tmp/ipi_<socket>``), as ``ase-mpnn serve --unix``.
        steps: total MD steps.
        motion: the inside of ``<motion mode='dynamics'>`` (``dynamics(...)``).
        temperature_K: initial (thermal) velocities and the ensemble's temperature, K.
        nbeads: path-integral beads (1: classical).
        properties: i-PI property names (units in braces, e.g. ``time{femtosecond}``),
            written to ``<prefix>.out`` every ``properties_stride`` steps (atomic units
            unless a unit is given).
        trajectory_stride: also write positions (Angstrom) to ``<prefix>.pos_<bead>.extxyz``.
        prefix: output file prefix.
        seed: i-PI's random seed.
        structure: the file i-PI initialises from (ASE-readable; the client reads the same).
        timeout_s: how long i-PI waits for a client's answer before giving up, s.
        verbosity: i-PI's "quiet", "low", "medium", ...
    """
    trajectory = ("" if trajectory_stride is None else
                  f"\n    <trajectory filename='pos' stride='{trajectory_stride}' "
                  f"format='ase'> positions </trajectory>")
    timeout = "" if timeout_s is None else f" <timeout>{timeout_s}</timeout>"
    return f"""<simulation verbosity='{verbosity}' safe_stride='1000000'>
  <output prefix='{prefix}'>
    <properties stride='{properties_stride}' filename='out'>
      [ {", ".join(properties)} ]
    </properties>{trajectory}
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>{seed}</seed></prng>
  <ffsocket name='mpnn' mode='unix' pbc='false'>
    <address>{socket}</address> <latency>1e-4</latency>{timeout}
  </ffsocket>
  <system>
    <initialize nbeads='{nbeads}'>
      <file mode='ase'>{structure}</file>
      <velocities mode='thermal' units='kelvin'>{temperature_K}</velocities>
    </initialize>
    <forces><force forcefield='mpnn'/></forces>
    <ensemble><temperature units='kelvin'>{temperature_K}</temperature></ensemble>
    <motion mode='dynamics'>
      {motion}
    </motion>
  </system>
</simulation>
"""
