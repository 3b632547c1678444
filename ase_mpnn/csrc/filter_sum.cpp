// Fused filter-times-neighbour-and-sum of SchNet-like convolutions on a CSR neighbour list.
//
// The edges of a full neighbour list, sorted by centre atom, form the rows of a sparse
// matrix: row i holds the edges i -> j (row_ptr[i] .. row_ptr[i + 1]). Each edge reads its
// neighbour's features p[j], its bond's filter w[b] and the bond's cutoff envelope u[b]
// (one filter per bond: both edges of a bond, i -> j + S and j -> i - S, have the same
// length).
//
//   csr_filter_sum:   out[i] = sum over the edges e of row i of p[nbr[e]] * w[b] * u[b],
//                     b = bond[e]
//   bond_filter_grad: t[b] = p[nbr[e1]] * g[cen[e1]] + p[nbr[e2]] * g[cen[e2]] for the two
//                     edges e1, e2 of bond b; returns (u[b] t[b], sum_f w[b, f] t[b, f]),
//                     the gradients of the filter and of the envelope
//
// Each output row is written by one thread only (no atomics), so the sums are
// deterministic; nothing edge-sized is stored. Rows are split over torch's intra-op
// threads (at::parallel_for), so torch.set_num_threads governs the kernels too.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>

namespace {

void check_features(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), name, " must be a contiguous 2-D tensor");
  TORCH_CHECK(x.device().is_cpu(), name, " must be on the CPU");
}

void check_index(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 1 && x.is_contiguous() && x.scalar_type() == at::kLong,
              name, " must be a contiguous 1-D int64 tensor");
}

void check_bonds(const at::Tensor& w, const at::Tensor& u) {
  check_features(w, "w");
  TORCH_CHECK(u.dim() == 1 && u.is_contiguous() && u.size(0) == w.size(0),
              "u must be a contiguous 1-D tensor with one value per row of w");
  TORCH_CHECK(u.scalar_type() == w.scalar_type(), "u and w must have one dtype");
}

at::Tensor csr_filter_sum(const at::Tensor& p, const at::Tensor& w, const at::Tensor& u,
                          const at::Tensor& row_ptr, const at::Tensor& nbr,
                          const at::Tensor& bond) {
  check_features(p, "p");
  check_bonds(w, u);
  check_index(row_ptr, "row_ptr");
  check_index(nbr, "nbr");
  check_index(bond, "bond");
  TORCH_CHECK(p.scalar_type() == w.scalar_type(), "p and w must have one dtype");
  TORCH_CHECK(p.size(1) == w.size(1), "p and w must have one width");
  TORCH_CHECK(nbr.size(0) == bond.size(0), "nbr and bond must have one length");
  const int64_t n_rows = row_ptr.size(0) - 1, width = p.size(1);
  auto out = at::zeros({n_rows, width}, p.options());
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "csr_filter_sum", [&] {
    const scalar_t* P = p.data_ptr<scalar_t>();
    const scalar_t* W = w.data_ptr<scalar_t>();
    const scalar_t* U = u.data_ptr<scalar_t>();
    scalar_t* O = out.data_ptr<scalar_t>();
    const int64_t* R = row_ptr.data_ptr<int64_t>();
    const int64_t* J = nbr.data_ptr<int64_t>();
    const int64_t* B = bond.data_ptr<int64_t>();
    at::parallel_for(0, n_rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t* o = O + i * width;
        for (int64_t e = R[i]; e < R[i + 1]; ++e) {
          const scalar_t* pj = P + J[e] * width;
          const scalar_t* wb = W + B[e] * width;
          const scalar_t ub = U[B[e]];
          for (int64_t f = 0; f < width; ++f) o[f] += pj[f] * (wb[f] * ub);
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> bond_filter_grad(
    const at::Tensor& p, const at::Tensor& g, const at::Tensor& w, const at::Tensor& u,
    const at::Tensor& cen, const at::Tensor& nbr, const at::Tensor& first,
    const at::Tensor& second) {
  check_features(p, "p");
  check_features(g, "g");
  check_bonds(w, u);
  check_index(cen, "cen");
  check_index(nbr, "nbr");
  check_index(first, "first");
  check_index(second, "second");
  TORCH_CHECK(p.scalar_type() == g.scalar_type() && p.scalar_type() == w.scalar_type(),
              "p, g and w must have one dtype");
  TORCH_CHECK(p.size(1) == g.size(1) && p.size(1) == w.size(1),
              "p, g and w must have one width");
  TORCH_CHECK(first.size(0) == w.size(0) && second.size(0) == w.size(0),
              "first and second must have one edge per row of w");
  const int64_t n_bonds = first.size(0), width = p.size(1);
  auto grad_w = at::empty({n_bonds, width}, p.options());
  auto grad_u = at::empty({n_bonds}, p.options());
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "bond_filter_grad", [&] {
    const scalar_t* P = p.data_ptr<scalar_t>();
    const scalar_t* G = g.data_ptr<scalar_t>();
    const scalar_t* W = w.data_ptr<scalar_t>();
    const scalar_t* U = u.data_ptr<scalar_t>();
    scalar_t* GW = grad_w.data_ptr<scalar_t>();
    scalar_t* GU = grad_u.data_ptr<scalar_t>();
    const int64_t* C = cen.data_ptr<int64_t>();
    const int64_t* J = nbr.data_ptr<int64_t>();
    const int64_t* A = first.data_ptr<int64_t>();
    const int64_t* Z = second.data_ptr<int64_t>();
    at::parallel_for(0, n_bonds, 64, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* p1 = P + J[A[b]] * width;
        const scalar_t* g1 = G + C[A[b]] * width;
        const scalar_t* p2 = P + J[Z[b]] * width;
        const scalar_t* g2 = G + C[Z[b]] * width;
        const scalar_t* wb = W + b * width;
        scalar_t* o = GW + b * width;
        scalar_t dot = 0;
        for (int64_t f = 0; f < width; ++f) {
          const scalar_t t = p1[f] * g1[f] + p2[f] * g2[f];
          o[f] = t * U[b];
          dot += wb[f] * t;
        }
        GU[b] = dot;
      }
    });
  });
  return std::make_tuple(grad_w, grad_u);
}

}  // namespace

TORCH_LIBRARY(ase_mpnn, m) {
  m.def("csr_filter_sum(Tensor p, Tensor w, Tensor u, Tensor row_ptr, Tensor nbr, "
        "Tensor bond) -> Tensor");
  m.def("bond_filter_grad(Tensor p, Tensor g, Tensor w, Tensor u, Tensor cen, Tensor nbr, "
        "Tensor first, Tensor second) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ase_mpnn, CPU, m) {
  m.impl("csr_filter_sum", &csr_filter_sum);
  m.impl("bond_filter_grad", &bond_filter_grad);
}
