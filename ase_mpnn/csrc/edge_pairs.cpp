// Bonds of a neighbour list sorted by centre: each edge paired with its reverse.
//
//   bond_pairs(centers, neighbors, shifts) -> (bond_of_edge, first_edge)
//
// Edge e = i -> j + S and edge r = j -> i - S are one bond (their vectors are opposite,
// so their lengths are equal). The edges are visited in order; an edge not yet paired
// opens the next bond, and its reverse is looked up in row j, which the sorted centres
// make a contiguous block (row_ptr). So bonds are numbered by their lowest edge, which is
// first_edge, and the search costs one row per bond: O(edges x neighbours per atom), with
// no sort and no hash. An edge whose reverse is not in the list (a list that is not full)
// is a bond of its own, as in the torch path (ase_mpnn.nn.edge_pairs), which groups the
// edges the same way but numbers the bonds in another order.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

std::tuple<at::Tensor, at::Tensor> bond_pairs(const at::Tensor& centers_in,
                                              const at::Tensor& neighbors_in,
                                              const at::Tensor& shifts_in) {
  TORCH_CHECK(centers_in.device().is_cpu() && neighbors_in.device().is_cpu() &&
                  shifts_in.device().is_cpu(),
              "bond_pairs: tensors must be on the CPU");
  TORCH_CHECK(centers_in.dim() == 1 && neighbors_in.sizes() == centers_in.sizes(),
              "bond_pairs: centers and neighbors must be 1-D of one length");
  TORCH_CHECK(shifts_in.dim() == 2 && shifts_in.size(0) == centers_in.size(0) &&
                  shifts_in.size(1) == 3,
              "bond_pairs: shifts must be (n_edges, 3)");
  const at::Tensor centers = centers_in.to(at::kLong).contiguous();
  const at::Tensor neighbors = neighbors_in.to(at::kLong).contiguous();
  const at::Tensor shifts = shifts_in.to(at::kLong).contiguous();
  const int64_t n_edges = centers.size(0);
  const int64_t* cen = centers.data_ptr<int64_t>();
  const int64_t* nbr = neighbors.data_ptr<int64_t>();
  const int64_t* s = shifts.data_ptr<int64_t>();

  int64_t n_atoms = 0;
  for (int64_t e = 0; e < n_edges; ++e) {
    TORCH_CHECK(cen[e] >= 0 && nbr[e] >= 0, "bond_pairs: negative atom index");
    TORCH_CHECK(e == 0 || cen[e] >= cen[e - 1], "bond_pairs: centers must be sorted");
    n_atoms = std::max({n_atoms, cen[e] + 1, nbr[e] + 1});
  }
  std::vector<int64_t> row_ptr(n_atoms + 1, 0);
  for (int64_t e = 0; e < n_edges; ++e) ++row_ptr[cen[e] + 1];
  for (int64_t a = 0; a < n_atoms; ++a) row_ptr[a + 1] += row_ptr[a];

  at::Tensor bond_t = at::full({n_edges}, -1, at::TensorOptions().dtype(at::kLong));
  int64_t* bond = bond_t.data_ptr<int64_t>();
  std::vector<int64_t> first;
  first.reserve(n_edges / 2 + 1);
  for (int64_t e = 0; e < n_edges; ++e) {
    if (bond[e] >= 0) continue;  // the reverse of an earlier edge
    const int64_t b = static_cast<int64_t>(first.size());
    bond[e] = b;
    first.push_back(e);
    const int64_t i = cen[e], j = nbr[e];
    for (int64_t r = row_ptr[j]; r < row_ptr[j + 1]; ++r) {
      if (r != e && bond[r] < 0 && nbr[r] == i && s[3 * r] == -s[3 * e] &&
          s[3 * r + 1] == -s[3 * e + 1] && s[3 * r + 2] == -s[3 * e + 2]) {
        bond[r] = b;
        break;
      }
    }
  }
  at::Tensor first_t = at::empty({static_cast<int64_t>(first.size())},
                                 at::TensorOptions().dtype(at::kLong));
  std::copy(first.begin(), first.end(), first_t.data_ptr<int64_t>());
  return {bond_t, first_t};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ase_mpnn, m) {
  m.def("bond_pairs(Tensor centers, Tensor neighbors, Tensor shifts) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ase_mpnn, CPU, m) {
  m.impl("bond_pairs", &bond_pairs);
}
