"""Dense sums over periodic images, S_p = sum_T w_pT f(|d_p + T|^2), for D3's two-body and
coordination-number sums.

Every (atom pair p, lattice translation T) entry of one structure is laid out as a row of a
dense (n_pairs, n_trans) block. The squared distances of a block are one matrix product,

    |d_p + T|^2 = |d_p|^2 + 2 d_p . T + |T|^2,

and the gradients are two more, dS/dd_p = 2 sum_T f'_pT (d_p + T) = 2 (F' 1) d_p + 2 F' T,
so nothing is gathered or scattered per entry: at D3's cutoffs (tens of Angstrom) the
entries outnumber the atom pairs a hundred times, and index_select / index_add_ on the
entries cost more than the arithmetic. Entries beyond the cutoff are computed and
masked; for the cells D3 meets (a cutoff larger than the cell) they are a minority.

Weights w_pT: 1 for i < j; for an atom and its own images (i == j, d = 0) 1/2 for T != 0 and
0 for T = 0, which counts each of the pairs {T, -T} once, as simple-dftd3 does.
"""

from __future__ import annotations

import torch

from .kernels import Kernel

#: entries per block: a few (block,)-arrays of float64 stay in the L2 cache
BLOCK = 1 << 18

#: up to this many entries f' is kept from the forward for the backward (32 MB float64)
KEPT_ENTRIES = 1 << 22


def _block_terms(kernel: Kernel, vectors: torch.Tensor, trans: torch.Tensor,
                 trans2: torch.Tensor, params: torch.Tensor, weight: float | None,
                 cutoff2: float, derivative: bool):
    """(w f, w f' or None) of one block of rows (n_rows, n_trans). Entries beyond the
    cutoff are 0, and their r^2 is replaced by the cutoff's so that nothing is evaluated
    at r = 0; ``weight`` (1/2 for an atom with its own images) multiplies every entry."""
    r2 = torch.addmm(trans2[None, :], vectors, trans.T, alpha=2.0)
    r2 = r2 + (vectors * vectors).sum(-1, keepdim=True)
    inside = (r2.detach() <= cutoff2).to(r2.dtype)
    if weight is not None:
        inside = inside * weight
    # beyond the cutoff r^2 is clamped to it (zero gradient there), then masked
    value, slope = kernel(r2.clamp(max=cutoff2), params[:, None, :], derivative)
    return value * inside, (slope * inside if derivative else None)


def _blocks(vectors: torch.Tensor, trans: torch.Tensor, cutoff2: float) -> list[tuple]:
    """(row slice, number of translations) per block of rows. With the rows sorted by |d|
    and the translations by |T|, a block needs only the translations |T| <= cutoff +
    max |d| of the block: a prefix."""
    with torch.no_grad():
        lengths = torch.linalg.vector_norm(vectors, dim=1)
        trans_lengths = torch.linalg.vector_norm(trans, dim=1).contiguous()
        rows = max(1, BLOCK // max(len(trans), 1))
        blocks = []
        for start in range(0, len(vectors), rows):
            block = slice(start, min(start + rows, len(vectors)))
            reach = cutoff2 ** 0.5 + float(lengths[block].max())
            n_cols = int(torch.searchsorted(trans_lengths, reach, right=True))
            blocks.append((block, n_cols))
    return blocks


class _DenseImageSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vectors, trans, params, own_images, cutoff2, kernel):
        blocks = _blocks(vectors, trans, cutoff2)
        trans2 = (trans * trans).sum(-1)
        weight = 0.5 if own_images else None
        # keep f' for the backward when it is small; otherwise (and for double backward)
        # the backward recomputes it
        keep = sum((b.stop - b.start) * n for b, n in blocks) <= KEPT_ENTRIES
        parts, slopes = [], []
        for block, n in blocks:
            value, slope = _block_terms(kernel, vectors[block], trans[:n], trans2[:n],
                                        params[block], weight, cutoff2, keep)
            parts.append(value.sum(-1))
            slopes.append(slope)
        ctx.save_for_backward(vectors, trans, params)
        ctx.kernel, ctx.cutoff2, ctx.blocks, ctx.own_images = kernel, cutoff2, blocks, own_images
        ctx.slopes = slopes if keep else None
        return torch.cat(parts) if parts else vectors.new_zeros(0)

    @staticmethod
    def backward(ctx, grad):
        # plain torch operations on the saved inputs: with create_graph (Hessians) autograd
        # differentiates this backward too
        vectors, trans, params = ctx.saved_tensors
        trans2 = (trans * trans).sum(-1)
        weight = 0.5 if ctx.own_images else None
        grad_vectors, grad_trans = [], torch.zeros_like(trans)
        recompute = ctx.slopes is None or torch.is_grad_enabled()
        for k, (block, n) in enumerate(ctx.blocks):
            v, t = vectors[block], trans[:n]
            if recompute:
                _, slope = _block_terms(ctx.kernel, v, t, trans2[:n], params[block], weight,
                                        ctx.cutoff2, True)
            else:
                slope = ctx.slopes[k]
            weighted = slope * (2.0 * grad[block, None])  # (rows, n): 2 g_p f'_pT
            grad_vectors.append(weighted.sum(-1, keepdim=True) * v + weighted @ t)
            if ctx.needs_input_grad[1]:  # the translations depend on the cell: stress only
                grad_t = weighted.T @ v + weighted.sum(0)[:, None] * t
                grad_trans = grad_trans + torch.nn.functional.pad(
                    grad_t, (0, 0, 0, len(trans) - n))
        return torch.cat(grad_vectors), grad_trans, None, None, None, None


def dense_image_sum(kernel: Kernel, vectors: torch.Tensor, trans: torch.Tensor,
                    params: torch.Tensor, own_images: bool, cutoff: float) -> torch.Tensor:
    """S (n_rows,) of one structure: sum over translations within ``cutoff`` (Angstrom).

    Args:
        kernel: f and its derivative in r^2 (``bj_damping``, ``d3_counting``).
        vectors: (n_rows, 3) minimum-image vectors d_p, Angstrom (differentiable), sorted
            by length.
        trans: (n_trans, 3) lattice translations T, Angstrom (differentiable), sorted by
            length; T = 0 among them once, except with ``own_images``.
        params: (n_rows, k) per-pair constants of the kernel (no gradient).
        own_images: the rows are atoms paired with themselves (d = 0, T != 0): each entry
            weighs 1/2, so that each of the pairs {T, -T} counts once.
    """
    return _DenseImageSum.apply(vectors, trans, params.detach(), bool(own_images),
                                float(cutoff) ** 2, kernel)


def pair_sums(kernel: Kernel, pairs, minimum: torch.Tensor, trans: torch.Tensor,
              params: torch.Tensor, cutoff: float) -> torch.Tensor:
    """S (n_pairs,) of a batch (``pairs``: ``ImagePairs``, its structures consecutive):
    ``dense_image_sum`` per structure, over the translations that can reach ``cutoff``,
    atoms with themselves apart from the other pairs."""
    pair_counts = torch.bincount(pairs.pair_graph, minlength=1).tolist()
    trans_counts = torch.bincount(pairs.shift_graph, minlength=1).tolist()
    own = pairs.first == pairs.second
    with torch.no_grad():
        lengths = torch.linalg.vector_norm(minimum.detach(), dim=1)
        trans_lengths = torch.linalg.vector_norm(trans.detach(), dim=1)
        shortest_first = torch.argsort(lengths)
    out = minimum.new_zeros(len(minimum))
    p0, t0 = 0, 0
    for n_pairs, n_trans in zip(pair_counts, trans_counts):
        rows, cols = slice(p0, p0 + n_pairs), slice(t0, t0 + n_trans)
        p0, t0 = p0 + n_pairs, t0 + n_trans
        if n_pairs == 0:
            continue
        # |d + T| <= cutoff needs |T| <= cutoff + |d|
        reach = cutoff + float(lengths[rows].max())
        keep = torch.nonzero(trans_lengths[cols] <= reach).flatten() + cols.start
        keep = keep[torch.argsort(trans_lengths[keep])]
        nonzero = keep[trans_lengths[keep] > 0]  # an atom meets itself only at T != 0
        ordered = shortest_first[(shortest_first >= rows.start) & (shortest_first < rows.stop)]
        for own_images, columns in ((False, keep), (True, nonzero)):
            index = ordered[own[ordered] == own_images]
            if len(index) and len(columns):
                summed = dense_image_sum(kernel, minimum.index_select(0, index),
                                         trans.index_select(0, columns),
                                         params.index_select(0, index), own_images, cutoff)
                out = out.index_add(0, index, summed)
    return out
