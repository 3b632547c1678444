// Full neighbour list by a cell list, sorted by centre atom as it is made.
//
//   cell_list(positions, box, pbc, cutoff) -> (i, j, S, d): every pair with
//   |x_j - x_i + S @ box| < cutoff, S the integer lattice shift of j (zero along
//   non-periodic directions), self-pairs (i == j, S == 0) left out, in the order of i.
//
// The box's rows are its lattice vectors. Along periodic directions the positions must lie
// in the box (fractional coordinates in [0, 1): ase_mpnn.graph.neighbors wraps them first);
// along non-periodic ones the box must enclose them (its search box does).
//
// Atoms are binned on a grid of the box's fractional coordinates. Along direction k the
// lattice planes are h_k = 1 / |column k of box^-1| apart, so a bin spans h_k / n_k of
// height, and two atoms closer than the cutoff c are at most m_k = ceil(c n_k / h_k) bins
// apart along k (|delta f_k| <= |column k of box^-1| |r| < c / h_k). Along a periodic
// direction a bin index beyond the grid is its periodic image: the bin modulo n_k, and
// the lattice shift that brings it back. So every (bin, shift) is visited once per centre
// and every pair is found once, with as few distance tests as the grid allows.
//
// The loop runs over centres in order, so the list comes out sorted by centre without a
// sort, which is what the models' per-atom blocks and CSR kernels read. One thread: at
// 108 Cu atoms (5 A) a call takes about 0.15 ms, and at 108,000 0.66 s against vesin's 1.03.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

using Vec3 = std::array<double, 3>;

// Inverse of the 3 x 3 matrix a (rows: lattice vectors).
std::array<Vec3, 3> inverse(const std::array<Vec3, 3>& a) {
  const double det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) -
                     a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
                     a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
  TORCH_CHECK(std::isfinite(det) && det != 0.0, "cell_list: the box is singular");
  std::array<Vec3, 3> inv{};
  for (int r = 0; r < 3; ++r) {
    for (int c = 0; c < 3; ++c) {
      // cofactor of a[c][r] over det (adjugate transpose)
      const int r1 = (c + 1) % 3, r2 = (c + 2) % 3, c1 = (r + 1) % 3, c2 = (r + 2) % 3;
      inv[r][c] = (a[r1][c1] * a[r2][c2] - a[r1][c2] * a[r2][c1]) / det;
    }
  }
  return inv;
}

// Number of bins per direction: bins at least `cutoff` high where the box allows, and no
// more bins in all than about four per atom (a vast, sparse box stays cheap).
std::array<int64_t, 3> grid_shape(const Vec3& heights, double cutoff, int64_t n_atoms) {
  std::array<int64_t, 3> n{};
  for (int k = 0; k < 3; ++k) {
    const double bins = std::floor(heights[k] / cutoff);
    n[k] = static_cast<int64_t>(std::clamp(bins, 1.0, 1e6));
  }
  const int64_t most = std::max<int64_t>(27, 4 * n_atoms);
  while (n[0] * n[1] * n[2] > most) {
    const int k = static_cast<int>(std::max_element(n.begin(), n.end()) - n.begin());
    n[k] = (n[k] + 1) / 2;
  }
  return n;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cell_list(
    const at::Tensor& positions_in, const at::Tensor& box_in, at::IntArrayRef pbc_in,
    double cutoff) {
  TORCH_CHECK(positions_in.device().is_cpu() && box_in.device().is_cpu(),
              "cell_list: tensors must be on the CPU");
  TORCH_CHECK(positions_in.dim() == 2 && positions_in.size(1) == 3,
              "cell_list: positions must be (n_atoms, 3)");
  TORCH_CHECK(box_in.dim() == 2 && box_in.size(0) == 3 && box_in.size(1) == 3,
              "cell_list: box must be 3 x 3");
  TORCH_CHECK(pbc_in.size() == 3, "cell_list: pbc must have three flags");
  TORCH_CHECK(std::isfinite(cutoff) && cutoff > 0.0, "cell_list: cutoff must be > 0");
  const at::Tensor positions = positions_in.to(at::kDouble).contiguous();
  const at::Tensor box_t = box_in.to(at::kDouble).contiguous();
  const int64_t n = positions.size(0);
  const double* x = positions.data_ptr<double>();
  std::array<Vec3, 3> box{};
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) box[r][c] = box_t.data_ptr<double>()[3 * r + c];
  const std::array<bool, 3> pbc{pbc_in[0] != 0, pbc_in[1] != 0, pbc_in[2] != 0};
  const std::array<Vec3, 3> inv = inverse(box);

  Vec3 heights{};  // distance between lattice planes along each direction
  for (int k = 0; k < 3; ++k)
    heights[k] = 1.0 / std::sqrt(inv[0][k] * inv[0][k] + inv[1][k] * inv[1][k] +
                                 inv[2][k] * inv[2][k]);
  const std::array<int64_t, 3> shape = grid_shape(heights, cutoff, n);
  std::array<int64_t, 3> reach{};  // bins to search on each side
  for (int k = 0; k < 3; ++k)
    reach[k] = static_cast<int64_t>(std::ceil(cutoff * shape[k] / heights[k]));

  // bin of every atom (fractional coordinate times bins, clamped onto the grid)
  std::vector<int64_t> bin_of(n);
  std::vector<std::array<int64_t, 3>> cell_of(n);
  for (int64_t a = 0; a < n; ++a) {
    for (int k = 0; k < 3; ++k) {
      const double f = x[3 * a] * inv[0][k] + x[3 * a + 1] * inv[1][k] + x[3 * a + 2] * inv[2][k];
      const double b = std::floor(f * static_cast<double>(shape[k]));
      cell_of[a][k] = static_cast<int64_t>(std::clamp(b, 0.0, static_cast<double>(shape[k] - 1)));
    }
    bin_of[a] = (cell_of[a][0] * shape[1] + cell_of[a][1]) * shape[2] + cell_of[a][2];
  }
  // atoms grouped by bin (counting sort, stable: ascending atom index within a bin)
  const int64_t n_bins = shape[0] * shape[1] * shape[2];
  std::vector<int64_t> start(n_bins + 1, 0), members(n);
  for (int64_t a = 0; a < n; ++a) ++start[bin_of[a] + 1];
  for (int64_t b = 0; b < n_bins; ++b) start[b + 1] += start[b];
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t a = 0; a < n; ++a) members[fill[bin_of[a]]++] = a;
  }

  // the atoms' positions in bin order: a bin's members are read as one contiguous block
  std::vector<double> binned(3 * n);
  for (int64_t m = 0; m < n; ++m)
    for (int c = 0; c < 3; ++c) binned[3 * m + c] = x[3 * members[m] + c];

  std::vector<int64_t> out_i, out_j, out_s;
  std::vector<double> out_d;
  {  // room for the expected count, n^2 (4 pi / 3) c^3 / volume, 10 % over
    const double volume = std::abs(
        box[0][0] * (box[1][1] * box[2][2] - box[1][2] * box[2][1]) -
        box[0][1] * (box[1][0] * box[2][2] - box[1][2] * box[2][0]) +
        box[0][2] * (box[1][0] * box[2][1] - box[1][1] * box[2][0]));
    const double expected = 1.1 * static_cast<double>(n) * static_cast<double>(n) *
                            4.18879 * cutoff * cutoff * cutoff / volume;
    const auto room = static_cast<size_t>(std::clamp(expected, 16.0, 2e8));
    out_i.reserve(room);
    out_j.reserve(room);
    out_s.reserve(3 * room);
    out_d.reserve(room);
  }
  const double cutoff2 = cutoff * cutoff;
  for (int64_t i = 0; i < n; ++i) {
    const double xi = x[3 * i], yi = x[3 * i + 1], zi = x[3 * i + 2];
    std::array<int64_t, 3> lo{}, hi{};
    for (int k = 0; k < 3; ++k) {
      lo[k] = cell_of[i][k] - reach[k];
      hi[k] = cell_of[i][k] + reach[k];
      if (!pbc[k]) {  // no images: only the grid's own bins
        lo[k] = std::max<int64_t>(lo[k], 0);
        hi[k] = std::min<int64_t>(hi[k], shape[k] - 1);
      }
    }
    for (int64_t c0 = lo[0]; c0 <= hi[0]; ++c0) {
      const int64_t s0 = pbc[0] ? (c0 >= 0 ? c0 / shape[0] : -((-c0 - 1) / shape[0]) - 1) : 0;
      const int64_t b0 = c0 - s0 * shape[0];
      for (int64_t c1 = lo[1]; c1 <= hi[1]; ++c1) {
        const int64_t s1 = pbc[1] ? (c1 >= 0 ? c1 / shape[1] : -((-c1 - 1) / shape[1]) - 1) : 0;
        const int64_t b1 = c1 - s1 * shape[1];
        for (int64_t c2 = lo[2]; c2 <= hi[2]; ++c2) {
          const int64_t s2 = pbc[2] ? (c2 >= 0 ? c2 / shape[2] : -((-c2 - 1) / shape[2]) - 1) : 0;
          const int64_t b2 = c2 - s2 * shape[2];
          const int64_t bin = (b0 * shape[1] + b1) * shape[2] + b2;
          // the image's offset s @ box
          const double ox = s0 * box[0][0] + s1 * box[1][0] + s2 * box[2][0];
          const double oy = s0 * box[0][1] + s1 * box[1][1] + s2 * box[2][1];
          const double oz = s0 * box[0][2] + s1 * box[1][2] + s2 * box[2][2];
          const bool home = s0 == 0 && s1 == 0 && s2 == 0;
          for (int64_t m = start[bin]; m < start[bin + 1]; ++m) {
            const int64_t j = members[m];
            if (home && j == i) continue;
            const double dx = binned[3 * m] - xi + ox, dy = binned[3 * m + 1] - yi + oy,
                         dz = binned[3 * m + 2] - zi + oz;
            const double r2 = dx * dx + dy * dy + dz * dz;
            if (r2 < cutoff2) {
              out_i.push_back(i);
              out_j.push_back(j);
              out_s.insert(out_s.end(), {s0, s1, s2});
              out_d.push_back(std::sqrt(r2));
            }
          }
        }
      }
    }
  }
  const int64_t pairs = static_cast<int64_t>(out_i.size());
  auto longs = at::TensorOptions().dtype(at::kLong);
  at::Tensor i_t = at::empty({pairs}, longs), j_t = at::empty({pairs}, longs);
  at::Tensor s_t = at::empty({pairs, 3}, longs);
  at::Tensor d_t = at::empty({pairs}, at::TensorOptions().dtype(at::kDouble));
  std::copy(out_i.begin(), out_i.end(), i_t.data_ptr<int64_t>());
  std::copy(out_j.begin(), out_j.end(), j_t.data_ptr<int64_t>());
  std::copy(out_s.begin(), out_s.end(), s_t.data_ptr<int64_t>());
  std::copy(out_d.begin(), out_d.end(), d_t.data_ptr<double>());
  return {i_t, j_t, s_t, d_t};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ase_mpnn, m) {
  m.def("cell_list(Tensor positions, Tensor box, int[] pbc, float cutoff) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ase_mpnn, CPU, m) {
  m.impl("cell_list", &cell_list);
}
