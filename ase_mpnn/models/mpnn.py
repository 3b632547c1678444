"""The generic invariant message-passing network: one point per choice on five axes.

SchNet, CGCNN, MEGNet and their relatives are instances of the neural message-passing
framework (Gilmer et al., ICML 2017): they differ only in their message function,
aggregation, update, edge updates and readout. ``MPNN`` makes each
axis a constructor argument:

=============  ================================================================================
axis           options
=============  ================================================================================
message        "linear"  u(r) W h_u                              (graph convolution, Kipf & Welling)
               "mlp"     MLP([h_v; h_u; e_uv])                    (Gilmer et al. 2017)
               "filter"  W h_u * Filter(e_uv)                     (SchNet's continuous filter)
               "gated"   sigma(W_f z) * softplus(W_s z), z=[h_v;h_u;e_uv]   (CGCNN)
aggregation    "sum", "mean", "smoothmax", "attention", "pna"   (ase_mpnn.nn.message_passing)
update         "residual" h + MLP(m)            (SchNet)
               "gcn"      act(W h + m)          (graph convolution)
               "cgcnn"    softplus(h + m)       (CGCNN, without batch norm)
               "gru"      GRUCell(m, h)         (gated graph networks, Gilmer's MPNN)
               "mlp"      MLP([h; m])
edge updates   False, or True: e_uv <- e_uv + MLP([h_v; h_u; e_uv]) each layer (MEGNet, ALIGNN)
readout        per-atom MLP to one energy; the potential sums atoms (extensive by construction)
=============  ================================================================================

Edge features start as a radial basis of the distance. Every message is weighted by the
cutoff envelope u(r) inside the aggregation, so the energy is continuously differentiable
as atoms cross the cutoff, whatever the choices.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import keys
from ..nn import make_envelope, make_radial_basis, mlp
from ..nn.chunks import atom_chunks, map_chunks, split_edges
from ..nn.edge_pairs import graph_bonds
from ..nn.filter_sum import (
    BondEdges,
    filter_sum,
    filter_sum_fused,
    filter_sum_slots,
    fused_layout,
    slot_layout,
)
from ..nn.global_state import make_global_embedding
from ..nn.message_passing import SumAggregation, make_aggregation
from .base import AtomisticModel, check_positive_ints, register_architecture

MESSAGES = ("linear", "mlp", "filter", "gated")
UPDATES = ("residual", "gcn", "cgcnn", "gru", "mlp")


class LinearMessage(nn.Module):
    """m_uv = W h_u: the graph convolution's message, blind to distance but for u(r)."""

    def __init__(self, n_features: int, n_edge: int, width: int, activation: str):
        super().__init__()
        self.linear = nn.Linear(n_features, width, bias=False)

    def project(self, h):
        return self.linear(h)  # project first: n_atoms rows, not n_edges

    def forward(self, p, edges, centers, neighbors):
        return p.index_select(0, neighbors)


class NodeProjection:
    """Messages read node features through ``project(h)``, computed once per layer on the
    atoms; ``forward(p, edges, centers, neighbors)`` then works on any block of edges."""

    def project(self, h):
        return h


class MLPMessage(NodeProjection, nn.Module):
    """m_uv = MLP([h_v; h_u; e_uv])."""

    def __init__(self, n_features: int, n_edge: int, width: int, activation: str):
        super().__init__()
        self.net = mlp([2 * n_features + n_edge, width, width], activation)

    def forward(self, h, edges, centers, neighbors):
        z = torch.cat([h.index_select(0, centers), h.index_select(0, neighbors), edges], dim=-1)
        return self.net(z)


class FilterMessage(nn.Module):
    """m_uv = in2f(h_u) * filter_net(e_uv): SchNet's continuous-filter convolution.

    ``bond_filters`` evaluates the filter network once per bond (an edge and its reverse,
    ``ase_mpnn.nn.edge_pairs``), for the bond-shared path of ``MessagePassingLayer``.
    """

    def __init__(self, n_features: int, n_edge: int, width: int, activation: str):
        super().__init__()
        self.in2f = nn.Linear(n_features, width, bias=False)
        self.filter_net = mlp([n_edge, width, width], activation)

    def project(self, h):
        return self.in2f(h)

    def forward(self, p, edges, centers, neighbors):
        return p.index_select(0, neighbors) * self.filter_net(edges)

    def bond_filters(self, bond_edges: torch.Tensor) -> torch.Tensor:
        """(n_bonds, n_edge) edge features of each bond -> (n_bonds, width) filters."""
        return self.filter_net(bond_edges)


class GatedMessage(NodeProjection, nn.Module):
    """m_uv = sigmoid(W_f z + b_f) * softplus(W_s z + b_s), z = [h_v; h_u; e_uv] (CGCNN)."""

    def __init__(self, n_features: int, n_edge: int, width: int, activation: str):
        super().__init__()
        self.linear = nn.Linear(2 * n_features + n_edge, 2 * width)  # W_f and W_s stacked

    def forward(self, h, edges, centers, neighbors):
        z = torch.cat([h.index_select(0, centers), h.index_select(0, neighbors), edges], dim=-1)
        gate, core = self.linear(z).chunk(2, dim=-1)
        return torch.sigmoid(gate) * nn.functional.softplus(core)


class ResidualUpdate(nn.Module):
    """h' = h + f2out(m)."""

    def __init__(self, n_features: int, width: int, activation: str):
        super().__init__()
        self.f2out = mlp([width, n_features, n_features], activation)

    def forward(self, h, m):
        return h + self.f2out(m)


class GCNUpdate(nn.Module):
    """h' = act(W h + V m): the graph-convolution update U(h_v, m_v) = sigma(W' h_v + m_v)
    (Kipf & Welling, ICLR 2017)."""

    def __init__(self, n_features: int, width: int, activation: str):
        super().__init__()
        from ..nn import make_activation

        self.self_linear = nn.Linear(n_features, n_features)
        self.message_linear = nn.Linear(width, n_features, bias=False)
        self.act = make_activation(activation)

    def forward(self, h, m):
        return self.act(self.self_linear(h) + self.message_linear(m))


class CGCNNUpdate(nn.Module):
    """h' = softplus(h + V m) (Xie & Grossman 2018; batch norm left out: it would make an
    atom's energy depend on the other structures in a batch)."""

    def __init__(self, n_features: int, width: int, activation: str):
        super().__init__()
        self.message_linear = nn.Identity() if width == n_features else nn.Linear(width, n_features)

    def forward(self, h, m):
        return nn.functional.softplus(h + self.message_linear(m))


class GRUUpdate(nn.Module):
    """h' = GRUCell(m, h): gated recurrent update."""

    def __init__(self, n_features: int, width: int, activation: str):
        super().__init__()
        self.cell = nn.GRUCell(width, n_features)

    def forward(self, h, m):
        return self.cell(m, h)


class MLPUpdate(nn.Module):
    """h' = MLP([h; m])."""

    def __init__(self, n_features: int, width: int, activation: str):
        super().__init__()
        self.net = mlp([n_features + width, n_features, n_features], activation)

    def forward(self, h, m):
        return self.net(torch.cat([h, m], dim=-1))


_MESSAGE_CLASSES = dict(zip(MESSAGES, (LinearMessage, MLPMessage, FilterMessage, GatedMessage)))
_UPDATE_CLASSES = dict(zip(UPDATES, (ResidualUpdate, GCNUpdate, CGCNNUpdate, GRUUpdate, MLPUpdate)))


def _choice(axis: str, value: str, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"unknown {axis} {value!r}; choose one of {', '.join(options)}")
    return value


class MessagePassingLayer(nn.Module):
    """One layer: messages, smooth aggregation, update, and optionally an edge update."""

    def __init__(self, n_features: int, n_edge: int, width: int, message: str,
                 aggregation: str, update: str, edge_updates: bool, activation: str):
        super().__init__()
        self.message = _MESSAGE_CLASSES[message](n_features, n_edge, width, activation)
        self.aggregate = make_aggregation(aggregation, width)
        aggregated = width * self.aggregate.out_factor
        self.update = _UPDATE_CLASSES[update](n_features, aggregated, activation)
        self.edge_update = (mlp([2 * n_features + n_edge, n_edge, n_edge], activation)
                            if edge_updates else None)

    @property
    def shares_bond_filters(self) -> bool:
        """True when its messages can read one filter per bond (``BondEdges``): filter
        messages and edge features that stay functions of the bond length."""
        return isinstance(self.message, FilterMessage) and self.edge_update is None

    @property
    def sums_filters(self) -> bool:
        """True when its messages are filters summed over neighbours (SchNet's
        convolution): what ``ase_mpnn.nn.filter_sum`` computes."""
        return self.shares_bond_filters and isinstance(self.aggregate, SumAggregation)

    def forward(self, h, edges, weight, centers, neighbors, chunks=None, bonds=None):
        """h (n_atoms, F), edges (n_edges, n_edge), weight (n_edges,) -> (h', edges').

        ``chunks`` (from ase_mpnn.nn.chunks.atom_chunks) splits the edge work into blocks
        of whole atoms; the results do not depend on it. With ``bonds`` (a ``BondEdges``;
        only when ``shares_bond_filters``) the filters are computed once per bond.
        """
        n_atoms = h.shape[0]
        chunks = chunks or [(0, n_atoms, 0, centers.shape[0])]
        p = self.message.project(h)
        if bonds is not None:
            return self._bond_shared(h, p, bonds, weight, centers, neighbors, chunks), edges
        pieces = split_edges(chunks, edges, weight, centers, neighbors)

        def aggregate(k):
            e, w, c, n = pieces[k]
            a0, a1 = chunks[k][:2]
            return self.aggregate(self.message(p, e, c, n), w, c - a0, a1 - a0)

        h_new = self.update(h, map_chunks(aggregate, chunks))
        if self.edge_update is not None:
            def edge_update(k):
                e, _, c, n = pieces[k]
                z = torch.cat([h.index_select(0, c), h.index_select(0, n), e], -1)
                return e + self.edge_update(z)

            edges = map_chunks(edge_update, chunks)
        return h_new, edges

    def _bond_shared(self, h, p, bonds, weight, centers, neighbors, chunks):
        """The update from filters computed once per bond: W_b = filter_net(e_b), read by
        both edges of bond b. A sum aggregation takes the envelope into W_b too, so
        each edge's message is one product p_j * W_b(ij), summed onto atom i
        (``ase_mpnn.nn.filter_sum``)."""
        filters = self.message.bond_filters(bonds.edges)
        summed = self.sums_filters
        if summed and bonds.fused is not None:  # the native kernels: every atom in one pass
            return self.update(h, filter_sum_fused(p, filters, bonds.envelope, bonds.fused))
        if summed:
            filters = filters * bonds.envelope[:, None]
        if summed and bonds.slots is not None:  # a compiled program's neighbour matrix
            return self.update(h, filter_sum_slots(p, filters, bonds.slots))
        pieces = split_edges(chunks, bonds.bond_of_edge, weight, centers, neighbors)

        def aggregate(k):
            b, w, c, n = pieces[k]
            a0, a1 = chunks[k][:2]
            if summed:
                return filter_sum(p, filters, n, b, c - a0, a1 - a0)
            messages = p.index_select(0, n) * filters.index_select(0, b)
            return self.aggregate(messages, w, c - a0, a1 - a0)

        return self.update(h, map_chunks(aggregate, chunks))


@register_architecture
class MPNN(AtomisticModel):
    """A message-passing potential configured along the five design axes (see module doc).

    Args:
        species: element symbols, e.g. ["Cu", "Ni"].
        cutoff: neighbour cutoff radius, Angstrom.
        n_features: width F of the atom features.
        n_layers: number of message-passing layers T (receptive field T * cutoff).
        message: "linear", "mlp", "filter" or "gated" (see the module docstring).
        aggregation: "sum", "mean", "smoothmax", "attention" or "pna".
        update: "residual", "gcn", "cgcnn", "gru" or "mlp".
        edge_updates: update the edge features too, after each layer.
        message_width: width of messages (default n_features).
        n_basis: radial basis functions forming the initial edge features.
        radial_basis: "gaussian" or "bessel".
        envelope: "cosine" or "polynomial" cutoff envelope.
        activation: "ssp", "silu" or "tanh" (smooth activations only).
        global_inputs: structure-wide inputs among "charge" and "spin" (total charge and
            multiplicity from atoms.info), embedded and added to every atom's features.
    """

    architecture = "MPNN"

    def __init__(
        self,
        species: Sequence[str],
        cutoff: float = 5.0,
        n_features: int = 64,
        n_layers: int = 3,
        message: str = "filter",
        aggregation: str = "sum",
        update: str = "residual",
        edge_updates: bool = False,
        message_width: int | None = None,
        n_basis: int = 20,
        radial_basis: str = "gaussian",
        envelope: str = "cosine",
        activation: str = "ssp",
        global_inputs: Sequence[str] | None = None,
    ):
        super().__init__(species, cutoff)
        message_width = message_width or n_features
        check_positive_ints(n_features=n_features, n_layers=n_layers,
                            message_width=message_width, n_basis=n_basis)
        _choice("message", message, MESSAGES)
        _choice("update", update, UPDATES)
        make_aggregation(aggregation, message_width)  # validates, with the reason for "max"
        self.hyperparameters = dict(
            n_features=n_features, n_layers=n_layers, message=message, aggregation=aggregation,
            update=update, edge_updates=bool(edge_updates), message_width=message_width,
            n_basis=n_basis, radial_basis=radial_basis, envelope=envelope, activation=activation,
        )
        self._build(n_features, n_layers, message, aggregation, update, bool(edge_updates),
                    message_width, n_basis, radial_basis, envelope, activation)
        self._record_global_inputs(global_inputs)
        self.global_embedding = make_global_embedding(global_inputs, n_features)

    def _build(self, n_features, n_layers, message, aggregation, update, edge_updates,
               message_width, n_basis, radial_basis, envelope, activation) -> None:
        self.bond_filters_enabled = True
        self.native_kernels_enabled = True
        self.embedding = nn.Embedding(len(self.species), n_features)
        self.radial_basis = make_radial_basis(radial_basis, n_basis, self.cutoff)
        self.envelope = make_envelope(envelope, self.cutoff)
        self.interactions = nn.ModuleList(
            MessagePassingLayer(n_features, n_basis, message_width, message, aggregation,
                                update, edge_updates, activation)
            for _ in range(n_layers)
        )
        self.readout = mlp([n_features, n_features // 2 or 1, 1], activation)

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-atom energies (n_atoms,), before the potential's scale and shift."""
        r = graph[keys.EDGE_LENGTHS]
        centers, neighbors = graph[keys.EDGE_INDEX]
        bonds = self._bonds(graph, r) if self.share_bond_filters else None
        if bonds is None:
            edges, weight = self.radial_basis(r), self.envelope(r)
        else:  # the per-bond inputs are in ``bonds``; the edges read them by bond
            edges, weight = None, bonds.envelope.index_select(0, bonds.bond_of_edge)
        h = self.embedding(graph[keys.SPECIES])
        if self.global_embedding is not None:
            h = h + self.global_embedding(graph, h)
        chunks = atom_chunks(centers, h.shape[0])
        for layer in self.interactions:
            h, edges = layer(h, edges, weight, centers, neighbors, chunks, bonds)
        return self.readout(h).squeeze(-1)

    @property
    def share_bond_filters(self) -> bool:
        """Whether forward computes filters once per bond (``BondEdges``): when every layer
        can and ``bond_filters_enabled`` (True by default; False runs the plain per-edge
        path, the reference the bond-shared path is tested against)."""
        return self.bond_filters_enabled and all(
            layer.shares_bond_filters for layer in self.interactions)

    def _bonds(self, graph: dict[str, torch.Tensor], r: torch.Tensor) -> BondEdges | None:
        """Bond-level radial inputs of the graph, or None where ``graph_bonds`` gives no
        pairing (no edges, graphs so large that their edge work is checkpointed, a
        whole-program trace that was not handed the pairing). Their ``fused`` layout is
        set where the native kernels can sum the filters (``native_kernels_enabled``,
        True by default; False runs the plain torch path they are tested against)."""
        pairing = graph_bonds(graph)
        if pairing is None:
            return None
        bond_of_edge, first_edge = pairing
        r_bond = r.index_select(0, first_edge)
        fused = slots = None
        if self.native_kernels_enabled and self.sums_on_neighbor_matrix:
            centers, neighbors = graph[keys.EDGE_INDEX]
            fused = fused_layout(centers, neighbors, bond_of_edge, first_edge,
                                 graph[keys.SPECIES].shape[0])
        if fused is None and self.sums_on_neighbor_matrix:
            slots = slot_layout(graph, bond_of_edge, first_edge, r.dtype)
        return BondEdges(self.radial_basis(r_bond), self.envelope(r_bond), bond_of_edge, fused,
                         slots)

    @property
    def sums_on_neighbor_matrix(self) -> bool:
        """Whether some layer sums filters (SchNet's convolution), which a compiled
        program does on the neighbour matrix (``ase_mpnn.nn.filter_sum.slot_layout``)."""
        return any(layer.sums_filters for layer in self.interactions)
