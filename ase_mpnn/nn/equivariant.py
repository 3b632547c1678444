"""Irreps conventions and the edge embeddings shared by NequIP and MACE, built on e3nn.

Node features are e3nn irreps tensors: (n_atoms, irreps.dim), each irrep block laid out
channel-major ((mul, 2l+1) flattened), in e3nn's real spherical-harmonic basis. Geometry
enters only through the edge vectors r_ij: their direction through spherical harmonics
Y(r_ij / |r_ij|) and their length through a Bessel basis times a polynomial envelope
u(r), which vanishes with its first two derivatives at the cutoff. ``edge_inputs``
computes these once per forward pass into an ``EdgeInputs`` record that every layer reads.

The convolution that consumes them is ``ase_mpnn.nn.convolution``; the fixes to e3nn
(exact Clebsch-Gordan tables in any dtype) are ``ase_mpnn.nn.e3nn_patches``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from e3nn import o3
from torch import nn

from .. import keys
from . import paired_gather
from .edge_pairs import graph_bonds
from .neighbor_matrix import neighbor_slots, padded_rows, to_slots
from .paired_gather import PairedRows, full_list, paired_rows
from .radial import BesselBasis, PolynomialCutoff
from .tracing import tracing


# --- irreps helpers ----------------------------------------------------------------------
def natural_irreps(l_max: int, mul: int = 1) -> o3.Irreps:
    """mul x (0e + 1o + 2e + ...) up to l_max: the parities (-1)^l of spherical harmonics."""
    return o3.Irreps([(mul, (l, (-1) ** l)) for l in range(l_max + 1)])


def species_irreps(n_species: int) -> o3.Irreps:
    """The one-hot species encoding as n_species even scalars."""
    return o3.Irreps(f"{n_species}x0e")


def scalar_dim(irreps: o3.Irreps) -> int:
    """Number of leading even scalars (0e) of ``irreps`` (the part an energy can read)."""
    dim = 0
    for mul, ir in irreps:
        if ir != o3.Irrep("0e"):
            break
        dim += mul
    return dim


# --- edge embeddings -----------------------------------------------------------------------
class EdgeSphericalHarmonics(nn.Module):
    """Y_lm(r_ij / |r_ij|) for l = 0..l_max, component-normalised (each |Y_l|^2 = 2l+1).

    Input (n_edges, 3) edge vectors, Angstrom; output (n_edges, (l_max+1)^2),
    dimensionless, irreps 0e+1o+2e+...
    """

    def __init__(self, l_max: int):
        super().__init__()
        self.irreps_out = o3.Irreps.spherical_harmonics(l_max)
        self.sh = o3.SphericalHarmonics(self.irreps_out, normalize=True, normalization="component")

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.sh(vectors)


class RadialEmbedding(nn.Module):
    """Bessel basis (n_edges, n_basis) and polynomial envelope u(r) (n_edges,) of |r_ij|.

    The Bessel functions sqrt(2/r_c) sin(k pi r / r_c) / r are orthonormal with weight
    r^2 but only ~0.2 in size where neighbours sit; they are multiplied by one constant
    that gives them unit RMS over r in [r_c/4, r_c], so the radial MLPs start with unit-
    scale inputs. Computed once per forward pass and shared by all layers' radial MLPs.
    Input lengths in Angstrom; both outputs are dimensionless.
    """

    def __init__(self, cutoff: float, n_basis: int, p: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.basis = BesselBasis(n_basis, cutoff)
        self.envelope = PolynomialCutoff(cutoff, p)
        self.normalization = _bessel_normalization(cutoff, n_basis)

    def forward(self, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.basis(lengths) * self.normalization, self.envelope(lengths)


def _bessel_normalization(cutoff: float, n_basis: int) -> float:
    """1 / RMS of the Bessel functions over 1001 points of r in [r_c/4, r_c] (float64)."""
    grid = torch.linspace(0.25 * cutoff, cutoff, 1001, dtype=torch.float64)
    frequencies = torch.arange(1, n_basis + 1, dtype=torch.float64) * math.pi / cutoff
    values = math.sqrt(2.0 / cutoff) * torch.sin(frequencies * grid[:, None]) / grid[:, None]
    return float(values.pow(2).mean().rsqrt())


def _silu_second_moment() -> float:
    """E[silu(z)^2] for z ~ N(0, 1), by Gauss-Hermite quadrature (deterministic)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    silu = nodes / (1.0 + np.exp(-nodes))
    return float((weights * silu**2).sum() / np.sqrt(2.0 * np.pi))


class NormalizedSiLU(nn.Module):
    """SiLU scaled so that a unit Gaussian input gives a unit second moment (as e3nn's
    ``normalize2mom``): activations keep their scale through the layers at initialisation."""

    scale = 1.0 / math.sqrt(_silu_second_moment())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(x) * self.scale


class RadialMLP(nn.Module):
    """Per-edge tensor-product weights R(r) u(r): an MLP on the Bessel basis, times u(r).

    Hidden layers use a normalised SiLU and no biases; weights are drawn N(0, 1/fan_in)
    so that outputs have roughly unit variance, the scale e3nn's path normalisation
    assumes for the tensor-product weights.
    """

    def __init__(self, n_basis: int, n_out: int, hidden: int, n_hidden_layers: int):
        super().__init__()
        sizes = [n_basis] + [hidden] * n_hidden_layers + [n_out]
        layers: list[nn.Module] = []
        for k, (n_in, n_next) in enumerate(zip(sizes[:-1], sizes[1:])):
            if k:
                layers.append(NormalizedSiLU())
            linear = nn.Linear(n_in, n_next, bias=False)
            nn.init.normal_(linear.weight, std=1.0 / math.sqrt(n_in))
            layers.append(linear)
        self.net = nn.Sequential(*layers)

    def forward(self, basis: torch.Tensor, envelope: torch.Tensor | None,
                columns: torch.Tensor | None = None) -> torch.Tensor:
        """basis (n_edges, n_basis), envelope (n_edges,) or None -> (n_edges, n_out), or
        with ``columns`` ((n,) int64) only those output columns, in that order, repeats
        allowed: (n_edges, n). The columns are picked from the last layer's weights, so no
        edge-sized tensor is indexed."""
        x, scale = basis, None
        last = len(self.net) - 1
        for k, module in enumerate(self.net):
            if isinstance(module, NormalizedSiLU):  # its scale goes into the next weights
                x, scale = nn.functional.silu(x), module.scale
            else:
                weight = module.weight
                if k == last and columns is not None:
                    weight = weight.index_select(0, columns)
                x = nn.functional.linear(x, weight if scale is None else weight * scale)
        return x if envelope is None else x * envelope[:, None]


# --- what every layer reads from the graph ------------------------------------------------
class EdgeInputs(NamedTuple):
    """The per-graph inputs of every equivariant layer, computed once per forward pass.

    Rows r are either the edges (``slots == 0``) or the cells of the padded
    (n_atoms, slots) neighbour matrix of ``ase_mpnn.nn.neighbor_matrix`` (row
    i * slots + s: the s-th edge of atom i). Padded rows lie beyond the cutoff, so their
    envelope, and every message they carry, is zero.

    Fields:
        species: (n_atoms,) int64, index of each atom's element in the model's species.
        onehot: (n_atoms, n_species) float, the one-hot encoding of ``species``.
        sh: (rows, irreps_sh.dim) float, Y(r_ij / |r_ij|), dimensionless, component-
            normalised (``EdgeSphericalHarmonics``).
        basis: (rows, n_basis) float, the scaled Bessel basis of |r_ij|, dimensionless.
        envelope: (rows,) float, u(|r_ij|) in [0, 1], zero at and beyond the cutoff.
        centers: (rows,) int64, centre atom i of each row.
        neighbors: (rows,) int64, neighbour atom j of each row (a padded row: its centre).
        slots: columns of the neighbour matrix, or 0 when the rows are the edges.
        bond_basis: (n_bonds, n_basis) float, the basis of each bond's length (a bond is
            an edge and its reverse, ``ase_mpnn.nn.edge_pairs``), or None.
        bond_envelope: (n_bonds,) float, u of each bond's length, or None.
        bond_of_row: (rows,) int64, the bond of each row (0 on padded rows), or None.
        pairs: the reverse of each row (``ase_mpnn.nn.paired_gather``), for a neighbour
            matrix of a full list with bonds; else None.

    With the bond fields, the radial MLPs run once per bond (``radial_weights``); they
    are None for graphs so large that their edge work is checkpointed in groups
    (``ase_mpnn.nn.chunks``), where one bond-sized tensor would hold the whole graph.
    """

    species: torch.Tensor
    onehot: torch.Tensor
    sh: torch.Tensor
    basis: torch.Tensor
    envelope: torch.Tensor
    centers: torch.Tensor
    neighbors: torch.Tensor
    slots: int
    bond_basis: torch.Tensor | None = None
    bond_envelope: torch.Tensor | None = None
    bond_of_row: torch.Tensor | None = None
    pairs: PairedRows | None = None


def radial_weights(radial: RadialMLP, inputs: EdgeInputs) -> torch.Tensor:
    """R(r) u(r) of every row of ``inputs`` (rows, radial's n_out), from one radial MLP call
    per bond when ``inputs`` has bonds, else per row."""
    if inputs.bond_of_row is None:
        return radial(inputs.basis, inputs.envelope)
    return radial(inputs.bond_basis, inputs.bond_envelope).index_select(0, inputs.bond_of_row)


def edge_inputs(graph: dict[str, torch.Tensor], sh: EdgeSphericalHarmonics,
                radial: RadialEmbedding, n_species: int) -> EdgeInputs:
    """The ``EdgeInputs`` of a graph that carries edge geometry (``keys.EDGE_VECTORS`` and
    ``keys.EDGE_LENGTHS``, Angstrom, ``keys.CELL_SHIFTS``), in the neighbour-matrix layout
    when its padding is small enough (``neighbor_slots``), else on the edges; with the
    bonds wherever ``graph_bonds`` gives them. A graph may hand in its layout
    (``keys.NEIGHBOR_SLOT``, ``keys.SLOT_COLUMNS``; the bond keys), as a compiled program's
    graph does; under a whole-program trace (``ase_mpnn.nn.tracing``) what is not handed
    in is not used: the rows are then the edges, without bonds."""
    species = graph[keys.SPECIES]
    centers, neighbors = graph[keys.EDGE_INDEX]
    vectors, lengths = graph[keys.EDGE_VECTORS], graph[keys.EDGE_LENGTHS]
    n_atoms, n_slots = species.shape[0], 0
    bonds = None
    # an exported program (ase_mpnn.compiled) holds one layout for every size, and the
    # bond and slot counts depend on the data, not only on the shapes: it runs on the
    # layout it is handed (bonds, slots), else on the edges
    exporting = tracing()
    pairing = graph_bonds(graph)
    pairs = None
    if pairing is not None:
        bond_of_row, first_edge = pairing
        bonds = (*radial(lengths.index_select(0, first_edge)), bond_of_row)
    if keys.NEIGHBOR_SLOT in graph:  # handed in, as to a compiled program
        slots = graph[keys.NEIGHBOR_SLOT], graph[keys.SLOT_COLUMNS].shape[0]
    else:
        slots = None if exporting else neighbor_slots(centers, n_atoms)
    if slots is not None:
        positions, n_slots = slots
        rows, far = n_atoms * n_slots, 2.0 * radial.cutoff  # padding: beyond the cutoff
        vectors = to_slots(vectors, positions, rows, vectors.new_tensor([far, 0.0, 0.0]))
        lengths = to_slots(lengths, positions, rows, far)
        centers, neighbors = padded_rows(neighbors, positions, n_atoms, n_slots)
        if bonds is not None:
            bonds = (*bonds[:2], to_slots(bonds[2], positions, rows, 0))
            # compiled programs only (paired_gather.PAIRED_IN_EAGER); their neighbour
            # matrix always comes from a full list (ase_mpnn.compiled hands in no other),
            # and their sizes cannot be compared
            if exporting or (paired_gather.PAIRED_IN_EAGER and full_list(*pairing)):
                pairs = paired_rows(*pairing, positions, n_atoms, n_slots)
    harmonics = sh(vectors)
    basis, envelope = radial(lengths)
    onehot = nn.functional.one_hot(species, n_species).to(harmonics.dtype)
    bonds = bonds or (None, None, None)
    return EdgeInputs(species, onehot, harmonics, basis, envelope, centers, neighbors, n_slots,
                      *bonds, pairs)
