"""NequIP and MACE: the physics kit, equivariance of the features, body order, bad input."""

from __future__ import annotations

import pickle

import pytest
import torch
from e3nn import o3

from ase_mpnn import Potential, keys, testing
from ase_mpnn.graph import build_graph
from ase_mpnn.models.base import architecture_class
from ase_mpnn.models.mace import MACE, SymmetricContraction, coupling_basis
from ase_mpnn.models.nequip import NequIP, allowed_irreps, pruned_layer_irreps
from ase_mpnn.models.presets import build_preset
from ase_mpnn.nn import e3nn_patches
from ase_mpnn.nn.convolution import EquivariantConvolution
from ase_mpnn.nn.e3nn_patches import exact_constants_
from ase_mpnn.potential import edge_geometry
from ase_mpnn.testing import rattled_triclinic_cell, scale_to_force_rms

SPECIES = ["Cu", "Ni"]

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These graphs have a few hundred edges: a second intra-op thread only adds OpenMP
    synchronisation, which on a loaded machine costs more than the arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(cls, seed: int = 0, **kwargs):
    """The shared small preset of ``cls`` (ase_mpnn.models.presets.SMALL), 4 A cutoff."""
    return build_preset(cls.architecture, SPECIES, 4.0, seed=seed, **kwargs)


def make_potential(cls, seed: int = 0, **kwargs) -> Potential:
    """A random model scaled so that forces on a rattled cell have ~1 eV/A RMS."""
    return scale_to_force_rms(Potential(make_model(cls, seed, **kwargs)),
                              rattled_triclinic_cell(SPECIES), 1.0)


def geometry_graph(atoms, cutoff: float = 4.0) -> dict[str, torch.Tensor]:
    graph = build_graph(atoms, cutoff, SPECIES, dtype=torch.float64)
    return edge_geometry(graph, graph[keys.POSITIONS], graph[keys.CELL])


def exact_d(irreps: o3.Irreps, matrix: torch.Tensor) -> torch.Tensor:
    """D(matrix) of ``irreps`` to float64 precision, also for improper matrices.

    e3nn's ``D_from_matrix`` goes through Euler angles and is good to ~1e-7 only, so the
    proper part comes from a least-squares fit of the spherical harmonics, and parity
    from the determinant.
    """
    det = torch.linalg.det(matrix)
    proper = matrix * det
    points = torch.randn(400, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    blocks = []
    for mul, ir in irreps:
        y = o3.spherical_harmonics(ir.l, points, normalize=True)
        y_rot = o3.spherical_harmonics(ir.l, points @ proper.T, normalize=True)
        d = torch.linalg.lstsq(y, y_rot).solution.T
        sign = ir.p if det < 0 else 1
        blocks += [sign * d] * mul
    return torch.block_diag(*blocks)


# the physics kit runs on both models in tests/test_physics.py (ARCHITECTURES)


def test_mace_scalar_messages_setting():
    """MACE's benchmark setting (scalar features between layers, l <= 3 in A, A^3) keeps
    forces conservative and the energy invariant under rotation and reflection."""
    potential = make_potential(MACE, n_features=4, hidden_l_max=0, max_ell=3)
    molecule = testing.small_molecule(SPECIES)
    assert testing.check_forces_finite_difference(potential, molecule) < 1e-6
    assert max(testing.check_symmetry(potential, molecule).values()) < 1e-10


@pytest.mark.parametrize("cls", [NequIP, MACE])
def test_model_pickles(cls):
    model = make_model(cls).double()
    graph = geometry_graph(rattled_triclinic_cell(SPECIES))
    clone = pickle.loads(pickle.dumps(model))
    with torch.no_grad():
        assert torch.equal(clone(graph), model(graph))


@pytest.mark.parametrize("cls", [NequIP, MACE])
def test_dropping_dead_einsums_changes_nothing(cls, monkeypatch):
    graph = geometry_graph(rattled_triclinic_cell(SPECIES))
    model = make_model(cls).double()
    monkeypatch.setattr(e3nn_patches, "drop_dead_code_", lambda module: None)
    reference = make_model(cls).double()
    with torch.no_grad():
        assert torch.equal(model(graph), reference(graph))


def test_nequip_carries_only_irreps_that_reach_the_energy():
    sh = [o3.Irrep(l, (-1) ** l) for l in range(2)]
    layers = pruned_layer_irreps(allowed_irreps(1, parity=True), sh, 4)
    assert [" ".join(map(str, irs)) for irs in layers] == ["0e 1o", "0e 1o 1e", "0e 1o", "0e"]
    # without parity, or with too few blocks for them to matter, no pseudo-tensors
    assert pruned_layer_irreps(allowed_irreps(1, parity=True), sh, 3) == \
        pruned_layer_irreps(allowed_irreps(1, parity=False), sh, 3)


@pytest.mark.parametrize("cls", [NequIP, MACE])
def test_registered_and_rebuilt_from_hyperparameters(cls):
    model = make_model(cls)
    assert architecture_class(cls.architecture) is cls
    clone = cls(model.species, model.cutoff, **model.hyperparameters)
    assert clone.hyperparameters == model.hyperparameters
    clone.load_state_dict(model.state_dict(), strict=True)


def test_mace_first_self_connection():
    """``first_self_connection`` adds mace-torch's residual term to the first layer only:
    its output is the plain layer's plus Linear_z(embedding), a learned vector per element;
    without it, layer 0 has no such weights (model files written before the option load)."""
    plain = make_model(MACE, hidden_l_max=0).double()
    residual = make_model(MACE, hidden_l_max=0, first_self_connection=True).double()
    assert plain.layers[0].self_connection is None
    assert residual.layers[0].self_connection is not None
    assert plain.hyperparameters["first_self_connection"] is False
    extra = set(residual.state_dict()) - set(plain.state_dict())
    assert extra and all(key.startswith("layers.0.self_connection.") for key in extra)
    residual.load_state_dict(plain.state_dict(), strict=False)  # the shared weights equal
    graph = geometry_graph(rattled_triclinic_cell(SPECIES))
    inputs = residual.edge_inputs(graph)
    with torch.no_grad():
        h0 = residual.embedding(inputs.species)
        difference = residual.layers[0](h0, inputs) - plain.layers[0](h0, inputs)
        per_element = residual.layers[0].self_connection(h0, inputs.onehot)
    assert torch.allclose(difference, per_element, rtol=0, atol=1e-12)
    for z in (0, 1):  # one vector per element, different between elements
        rows = per_element[inputs.species == z]
        assert torch.allclose(rows, rows[:1].expand_as(rows), rtol=0, atol=1e-12)
    cu, ni = per_element[inputs.species == 0][0], per_element[inputs.species == 1][0]
    assert (cu - ni).abs().max() > 1e-3


# --- equivariance of the node features ----------------------------------------------------
@pytest.mark.parametrize("cls", [NequIP, MACE])
@pytest.mark.parametrize("improper", [False, True])
def test_node_features_transform_with_their_irreps(cls, improper):
    """Rotating (or rotating and inverting) every edge vector maps the features of each
    layer by D(R) of their irreps; l > 0 and odd-parity blocks are present and non-zero."""
    model = make_model(cls).double()
    graph = geometry_graph(rattled_triclinic_cell(SPECIES))
    torch.manual_seed(3)
    matrix = o3.rand_matrix(dtype=torch.float64)
    if improper:
        matrix = -matrix
    moved = dict(graph)
    moved[keys.EDGE_VECTORS] = graph[keys.EDGE_VECTORS] @ matrix.T
    with torch.no_grad():
        before, after = model.node_features(graph), model.node_features(moved)
    assert any(irreps.lmax > 0 for irreps in model.layer_irreps)
    if cls is NequIP:  # parity=True: pseudo-vectors, which flip sign differently
        assert any(o3.Irrep("1e") in irreps for irreps in model.layer_irreps)
    for irreps, h0, h1 in zip(model.layer_irreps, before, after):
        assert all(h0[:, s].abs().max() > 1e-3 for s in irreps.slices())  # no dead block
        expected = h0 @ exact_d(irreps, matrix).T
        assert torch.allclose(h1, expected, rtol=0, atol=1e-12 * h0.abs().max())
        # e3nn's own D (through Euler angles, ~1e-7 accurate) agrees
        assert torch.allclose(h1, h0 @ irreps.D_from_matrix(matrix).T, atol=1e-5 * h0.abs().max())


@pytest.mark.parametrize("order, l_out", [(2, 0), (3, 0), (3, 1), (2, 2), (3, 2)])
def test_coupling_basis_is_symmetric_and_equivariant(order, l_out):
    basis = coupling_basis(2, order, l_out)
    assert basis.shape[0] > 0
    for perm in [(1, 0, 2), (0, 2, 1)][: order - 1]:  # swap two factors
        axes = (0, 1, *(2 + p for p in perm[:order]))
        assert torch.allclose(basis.permute(*axes), basis, atol=1e-14)
    torch.manual_seed(0)
    matrix = -o3.rand_matrix(dtype=torch.float64)
    d_in = exact_d(o3.Irreps("0e+1o+2e"), matrix)
    d_out = exact_d(o3.Irreps([(1, (l_out, (-1) ** l_out))]), matrix)
    rotated = basis
    for axis in range(order):  # C[M, i..] D[i, a] ... = D_out[M, N] C[N, a..]
        rotated = torch.movedim(torch.tensordot(rotated, d_in, dims=([2 + axis], [0])), -1,
                                2 + axis)
    assert torch.allclose(rotated, torch.einsum("pn...,mn->pm...", basis, d_out), atol=1e-13)


def test_product_basis_spans_the_e3nn_tensor_products():
    """The symmetric invariants of A, A^2, A^3 span exactly what chained e3nn tensor
    products ((A (x) A) (x) A -> 0e) give, no more and no fewer."""
    contraction = SymmetricContraction(1, 2, [0], 3, 1).double()
    exact_constants_(contraction)
    irreps_a = contraction.irreps_in  # 0e + 1o + 2e
    square = o3.FullTensorProduct(irreps_a, irreps_a).double()
    cube = o3.FullTensorProduct(square.irreps_out, irreps_a, filter_ir_out=["0e"]).double()
    for module in (square, cube):
        exact_constants_(module)
    a = torch.randn(300, irreps_a.dim, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = contraction.coupled(a)[0][:, 0, :, 0]  # (samples, paths)
        aa = square(a, a)
        slices = square.irreps_out.slices()
        even_scalars = [aa[:, s] for s, (_, ir) in zip(slices, square.irreps_out)
                        if ir == o3.Irrep("0e")]
        theirs = torch.cat([a[:, :1], *even_scalars, cube(aa, a)], dim=1)

    def rank(x):
        s = torch.linalg.svdvals(x)
        return int((s > 1e-9 * s[0]).sum())

    assert rank(ours) == ours.shape[1] == 1 + 3 + 5  # independent: A; 3 of A^2; 5 of A^3
    assert rank(theirs) == rank(ours) == rank(torch.cat([ours, theirs], dim=1))


def test_mace_uses_its_correlation_order():
    """Correlation 3 with its A^3 weights set to zero is exactly correlation 2 with the
    same weights; with them, energies differ: the 4-body terms are used."""
    atoms = rattled_triclinic_cell(SPECIES)
    graph = geometry_graph(atoms)
    model3 = make_model(MACE, correlation=3).double()
    model2 = make_model(MACE, correlation=2).double()
    state = model3.state_dict()
    for name, layer in enumerate(model3.layers):
        for l_index, orders in enumerate(layer.product.path_orders):
            key = f"layers.{name}.product.weights.{l_index}"
            keep = [p for p, order in enumerate(orders) if order <= 2]
            state[key] = state[key][:, keep]
    model2.load_state_dict(state, strict=True)
    with torch.no_grad():
        e2 = model2(graph)
        e3 = model3(graph)
        for layer in model3.layers:
            for weights, orders in zip(layer.product.weights, layer.product.path_orders):
                weights[:, [p for p, order in enumerate(orders) if order == 3]] = 0.0
        e3_without_cubic = model3(graph)
    assert torch.allclose(e3_without_cubic, e2, rtol=0, atol=1e-12 * e2.abs().max())
    assert (e3 - e2).abs().max() > 1e-6 * e2.abs().max()  # rounding would give ~1e-16


def test_float64_clebsch_gordan_tables_are_exact():
    """e3nn creates its tables in float32; moved or loaded into float64 they are exact."""
    model = make_model(MACE)
    tables = {n: b for n, b in model.named_buffers() if "_w3j_" in n}
    assert any(b.dtype == torch.float32 for b in tables.values())
    state = model.state_dict()  # float32-rounded tables
    model64 = make_model(MACE).double()
    model64.load_state_dict(state)
    for owner in (model.double(), model64):
        for name, buffer in owner.named_buffers():
            if "_w3j_" in name:
                ls = [int(x) for x in name.rsplit("_w3j_", 1)[1].split("_")]
                assert torch.equal(buffer, o3.wigner_3j(*ls, dtype=torch.float64)), name


# --- bad hyper-parameters ----------------------------------------------------------------
@pytest.mark.parametrize("cls, kwargs, match", [
    (NequIP, dict(l_max=4), r"l_max must be an integer in 0\.\.3, got 4"),
    (NequIP, dict(l_max=-1), r"l_max must be an integer in 0\.\.3"),
    (NequIP, dict(l_max=1.5), r"l_max must be an integer in 0\.\.3, got 1\.5"),
    (NequIP, dict(n_features=0), r"n_features must be an integer >= 1, got 0"),
    (NequIP, dict(n_layers=True), r"n_layers must be an integer >= 1, got True"),
    (NequIP, dict(parity="yes"), r"parity must be True or False"),
    (NequIP, dict(p=1), r"p must be an integer >= 2"),
    (NequIP, dict(avg_num_neighbors=0.0), r"avg_num_neighbors must be a positive"),
    (MACE, dict(max_ell=5), r"max_ell must be an integer in 0\.\.4, got 5"),
    (MACE, dict(correlation=4), r"correlation must be an integer in 1\.\.3, got 4"),
    (MACE, dict(correlation=0), r"correlation must be an integer in 1\.\.3, got 0"),
    (MACE, dict(correlation="3"), r"correlation must be an integer in 1\.\.3, got '3'"),
    (MACE, dict(max_ell=1, hidden_l_max=2), r"hidden_l_max must be an integer in 0\.\.1"),
    (MACE, dict(n_features=2.5), r"n_features must be an integer >= 1, got 2\.5"),
    (MACE, dict(radial_hidden=0), r"radial_hidden must be an integer >= 1"),
    (MACE, dict(avg_num_neighbors=float("nan")), r"avg_num_neighbors must be a positive"),
])
def test_bad_hyperparameters_are_named(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(SPECIES, 4.0, **kwargs)


def test_integral_floats_are_accepted_as_integers():
    model = MACE(SPECIES, 4.0, n_features=4.0, max_ell=1.0, correlation=2.0, n_layers=1)
    assert model.hyperparameters["n_features"] == 4
    assert isinstance(model.hyperparameters["max_ell"], int)


@pytest.mark.parametrize("irreps_sh, keep", [
    ("0e + 1o + 2e + 3o", "0e + 1o + 2e + 3o"), ("0e + 1o", "0e + 1o"),
    ("0e + 1o + 2e + 3o", "3o + 1o"),  # dropped paths, output order != harmonic order
])
def test_scalar_input_convolution_equals_the_e3nn_tensor_product(irreps_sh, keep):
    """The product fast path for mul x 0e inputs gives e3nn's TensorProduct to 1e-12."""
    keep = [ir for _, ir in o3.Irreps(keep)]
    conv = EquivariantConvolution(o3.Irreps("6x0e"), o3.Irreps(irreps_sh), keep,
                                  n_basis=4, radial_hidden=8, radial_layers=1,
                                  avg_num_neighbors=3.0).double()
    exact_constants_(conv)
    generator = torch.Generator().manual_seed(0)
    h = torch.randn(5, 6, dtype=torch.float64, generator=generator)
    sh = torch.randn(9, o3.Irreps(irreps_sh).dim, dtype=torch.float64, generator=generator)
    weights = torch.randn(9, conv.tp.weight_numel, dtype=torch.float64, generator=generator)
    neighbors = torch.randint(0, 5, (9,), generator=generator)
    centers = torch.randint(0, 5, (9,), generator=generator)
    fast = conv.scalar_path.summed(h[neighbors], sh, weights, centers, 5)
    reference = torch.zeros(5, conv.tp.irreps_out.dim, dtype=torch.float64).index_add_(
        0, centers, conv.tp(h[neighbors], sh, weights))
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("irreps_in, irreps_sh, keep", [
    ("6x0e", "0e + 1o + 2e + 3o", "0e + 1o + 2e + 3o"),  # MACE's scalar features
    ("6x0e + 6x1o", "0e + 1o", "0e + 1o + 1e"),  # NequIP, l_max 1
    ("6x0e + 6x1o + 6x2e", "0e + 1o + 2e", "2e + 0e + 1o"),  # output order != input order
    ("6x1o + 6x0e", "0e + 1o + 2e", "0e"),  # unsorted input irreps, one output
])
def test_neighbor_matrix_convolution_equals_the_e3nn_tensor_product(irreps_in, irreps_sh, keep,
                                                                    monkeypatch):
    """The bmm-over-slots convolution gives e3nn's TensorProduct summed over edges, 1e-12,
    with edges unsorted and atoms of different neighbour counts (padded slots)."""
    from ase_mpnn.nn import neighbor_matrix
    from ase_mpnn.nn.neighbor_matrix import neighbor_slots, to_slots

    monkeypatch.setattr(neighbor_matrix, "MAX_PADDING", 100.0)  # however uneven the rows

    irreps_in, irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
    keep = [ir for _, ir in o3.Irreps(keep)]
    conv = EquivariantConvolution(irreps_in, irreps_sh, keep, n_basis=4,
                                  radial_hidden=8, radial_layers=1,
                                  avg_num_neighbors=3.0).double()
    exact_constants_(conv)  # the reference's own Wigner 3j tables at float64
    assert conv.matrix_path is not None
    generator = torch.Generator().manual_seed(0)
    n_atoms, n_edges = 5, 17
    h = torch.randn(n_atoms, irreps_in.dim, dtype=torch.float64, generator=generator)
    sh = torch.randn(n_edges, irreps_sh.dim, dtype=torch.float64, generator=generator)
    weights = torch.randn(n_edges, conv.tp.weight_numel, dtype=torch.float64,
                          generator=generator)
    neighbors = torch.randint(0, n_atoms, (n_edges,), generator=generator)
    centers = torch.randint(0, n_atoms, (n_edges,), generator=generator)
    positions, n_slots = neighbor_slots(centers, n_atoms)
    assert n_atoms * n_slots > n_edges  # some slots are padding
    rows = n_atoms * n_slots
    fast = conv.matrix_path.block(h.index_select(1, conv.matrix_path.in_permutation),
                                  to_slots(sh, positions, rows),
                                  to_slots(weights, positions, rows),
                                  to_slots(neighbors, positions, rows), n_slots)
    reference = torch.zeros(n_atoms, conv.tp.irreps_out.dim, dtype=torch.float64).index_add_(
        0, centers, conv.tp(h[neighbors], sh, weights))
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)


def test_neighbor_slots_keep_each_edge_once_in_its_atoms_row():
    from ase_mpnn.nn.neighbor_matrix import neighbor_slots

    centers = torch.tensor([2, 0, 2, 2, 1, 0])
    positions, n_slots = neighbor_slots(centers, 4)
    assert n_slots == 3
    assert sorted(positions.tolist()) == sorted(set(positions.tolist()))
    assert torch.equal(positions // n_slots, centers)
    assert neighbor_slots(torch.tensor([0, 0, 0, 0]), 8) is None  # 8 x 4 slots for 4 edges
    assert neighbor_slots(torch.zeros(0, dtype=torch.int64), 3) is None


@pytest.mark.parametrize("cls", [NequIP, MACE])
def test_neighbor_matrix_and_edge_paths_give_the_same_results(cls, monkeypatch):
    """Energy, forces and stress agree to 1e-12 whichever layout the convolutions use."""
    from ase_mpnn.nn import neighbor_matrix

    potential = make_potential(cls).double()
    graph = build_graph(rattled_triclinic_cell(SPECIES), 4.0, SPECIES, dtype=torch.float64)
    matrix = potential(graph, forces=True, stress=True)
    monkeypatch.setattr(neighbor_matrix, "MAX_PADDING", 0.0)
    edges = potential(graph, forces=True, stress=True)
    for key in (keys.ENERGY, keys.FORCES, keys.STRESS):
        torch.testing.assert_close(matrix[key], edges[key], rtol=1e-12, atol=1e-12)
