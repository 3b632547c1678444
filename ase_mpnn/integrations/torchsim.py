"""ase-mpnn potentials inside torch-sim: many systems in one graph for MD and relaxation.

torch-sim (Radiant AI, https://github.com/Radical-AI/torch-sim) runs integrators,
optimizers, swap Monte Carlo and its autobatchers on a batched ``SimState`` and asks a
``ModelInterface`` for energies, forces and stresses. ``MPNNModel`` is that model for any
ase-mpnn potential:

    >>> import torch_sim as ts
    >>> from ase_mpnn.integrations.torchsim import MPNNModel
    >>> model = MPNNModel("emt-cuni-schnet")                              # doctest: +SKIP
    >>> final = ts.integrate(system=[cu, cuni], model=model, integrator=ts.nvt_langevin,
    ...                      n_steps=1000, temperature=600, timestep=0.002)  # doctest: +SKIP

The state becomes one batched graph of ase-mpnn (``ase_mpnn.graph.batched_skin``: a
Verlet list at cutoff + skin per system, reused across steps while provably complete, torch-
sim's wrapping of atoms into the cell included), then the potential gives the energy of
each system and, from one autograd pass, the forces and stress, exactly as the calculator
does.

Conventions, checked against torch-sim's source (0.3): ``state.cell`` holds the lattice
vectors as columns (ASE's transposed); energies eV, forces eV/A, stress (n_systems, 3, 3)
eV/A^3 with ASE's sign, sigma = (1/V) dE/d(strain) (torch-sim's optimizers and barostats
take the virial as -V (stress + P)), which is ase-mpnn's own: no conversion is needed.
States carry no total charge or spin: systems are evaluated as neutral singlets.

Needs ``pip install 'ase-mpnn[torchsim]'`` (torch-sim-atomistic, Python >= 3.11).
"""

from __future__ import annotations

from typing import Any

import torch

try:
    from torch_sim.models.interface import ModelInterface
    from torch_sim.state import SimState
except ImportError as exc:  # pragma: no cover - exercised only without torch-sim
    raise ImportError(
        "ase_mpnn.integrations.torchsim needs torch-sim (Python >= 3.11): "
        "pip install 'ase-mpnn[torchsim]'"
    ) from exc

from .. import keys
from ..calculator import DEFAULT_SKIN, resolve_dispersion
from ..dispersion import with_dispersion
from ..graph import MIN_DISTANCE
from ..graph.batched_skin import BatchedSkinList
from ..loading import ModelSource, potential_for, resolve_device, resolve_dtype

__all__ = ["MPNNModel"]


class MPNNModel(ModelInterface):
    """torch-sim ``ModelInterface`` over an ase-mpnn potential.

    Args:
        model: a built-in model name (``ase_mpnn.list_models()``), a model file path,
            model-file bytes, a loaded Potential or Committee, or an in-memory model
            (anything ``MPNNCalculator`` takes).
        device: torch device; None: CUDA when available, else the CPU.
        dtype: torch.float64 (torch-sim's default) or torch.float32; the state's tensors
            are used in this precision.
        compute_forces: return forces (n_atoms, 3), eV/A.
        compute_stress: return stress (n_systems, 3, 3), eV/A^3 (NaN for a system not
            periodic along all three axes: it has no volume).
        skin: Verlet skin, Angstrom: each system's list is built at cutoff + skin and
            reused while no pair can have come within the cutoff unseen; 0 rebuilds on
            every call. Results are identical either way.
        min_distance: atoms closer than this (Angstrom) raise InvalidStructureError.
        dispersion: D3(BJ) added to the model, as ``MPNNCalculator`` takes it ("auto":
            what the model file records as subtracted from its training labels).

    ``memory_scales_with`` is "n_atoms_x_density": the graph, and so memory and time,
    grows with the number of edges, atoms times neighbours within the cutoff.
    The potential is held as a plain attribute, not a registered submodule: a loaded
    potential is shared per process (``ase_mpnn.loading``), and ``.to()`` on this
    wrapper must not move it under other users. Device and dtype are fixed at creation.
    """

    def __init__(
        self,
        model: ModelSource,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
        *,
        compute_forces: bool = True,
        compute_stress: bool = True,
        skin: float = DEFAULT_SKIN,
        min_distance: float = MIN_DISTANCE,
        dispersion: str | dict | bool | None = "auto",
    ):
        super().__init__()
        self._device = resolve_device("auto" if device is None else device)
        self._dtype = resolve_dtype(dtype)
        self._compute_forces, self._compute_stress = bool(compute_forces), bool(compute_stress)
        self._memory_scales_with = "n_atoms_x_density"
        potential = potential_for(model, self._device, self._dtype)
        settings = resolve_dispersion(dispersion, getattr(potential, "manifest", None))
        if settings:
            potential = with_dispersion(potential, **settings)
        object.__setattr__(self, "potential", potential)  # not a submodule (see above)
        self.neighbors = BatchedSkinList(potential.cutoff, skin, potential.species,
                                         min_distance)

    @property
    def compute_forces(self) -> bool:
        """Whether forces are returned."""
        return self._compute_forces

    @compute_forces.setter
    def compute_forces(self, value: bool) -> None:
        self._compute_forces = bool(value)

    @property
    def compute_stress(self) -> bool:
        """Whether the stress is returned."""
        return self._compute_stress

    @compute_stress.setter
    def compute_stress(self, value: bool) -> None:
        self._compute_stress = bool(value)

    def forward(self, state: SimState | dict[str, torch.Tensor], **_: Any
                ) -> dict[str, torch.Tensor]:
        """Energies (n_systems,) eV, forces (n_atoms, 3) eV/A and stress (n_systems, 3, 3)
        eV/A^3 of a torch-sim state (or a dict of its fields); the state is not changed."""
        graph = self.neighbors.graph(*_state_tensors(state, self._device, self._dtype))
        stress = self._compute_stress
        out = self.potential(graph, forces=self._compute_forces, stress=stress)
        results = {"energy": out[keys.ENERGY].detach()}
        if self._compute_forces:
            results["forces"] = out[keys.FORCES].detach()
        if stress:
            results["stress"] = out[keys.STRESS].detach()
        return results


def _state_tensors(state: SimState | dict[str, torch.Tensor], device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """positions (n_atoms, 3), cell (n_systems, 3, 3) as rows, pbc (n_systems, 3),
    atomic numbers (n_atoms,) and atoms per system (n_systems,) of a state."""
    field = state.get if isinstance(state, dict) else lambda name: getattr(state, name)
    positions = field("positions").to(device, dtype)
    cell = field("cell").to(device, dtype)
    cell = (cell if cell.dim() == 3 else cell.unsqueeze(0)).transpose(1, 2)  # columns -> rows
    n_systems = cell.shape[0]
    system_idx = field("system_idx")
    if system_idx is None:
        system_idx = torch.zeros(len(positions), dtype=torch.int64, device=device)
    n_atoms = torch.bincount(system_idx.to(device, torch.int64), minlength=n_systems)
    pbc = torch.as_tensor(field("pbc"), dtype=torch.bool, device=device)
    if pbc.numel() == 1:  # torch-sim 0.3: one bool for all three axes and all systems
        pbc = pbc.reshape(1).expand(3)
    pbc = pbc.reshape(-1, 3).expand(n_systems, 3).contiguous()
    numbers = field("atomic_numbers").to(device, torch.int64)
    return positions, cell, pbc, numbers, n_atoms
