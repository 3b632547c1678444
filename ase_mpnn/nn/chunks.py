"""Edge work in blocks of whole atoms: fast and memory-bounded for large cells.

Message passing materialises several (n_edges, width) tensors per layer. For a few
thousand atoms they no longer fit in the CPU caches, and above the allocator's mmap
threshold (32 MB in glibc) every one of them is fresh memory the kernel must fault in and
zero on each call, so the time per atom grows with the cell (``benchmarks/run.py``
measures the per-atom growth from 1372 to 10976 Cu atoms). Processing the
edges in chunks of ``EDGE_CHUNK`` keeps the intermediates small (reused from the heap,
mostly cache-resident), at a few more Python-level operations per layer.

A chunk holds every edge of a contiguous range of centre atoms (edges are sorted by
centre), so any per-atom aggregation (sum, mean, softmax attention, PNA) of a chunk is
exact and the results are identical to the unchunked computation.

For very large graphs (more than ``CHECKPOINT_EDGES`` edges) the stored intermediates of
the backward pass would still grow with the cell; groups of chunks are then
checkpointed: their forward is recomputed during the backward pass instead of stored,
so memory stays bounded by the edge geometry plus one group (100,000 Cu atoms at 5 A
fit in a few GB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from .tracing import tracing

#: edges per chunk: the (chunk, width) intermediates stay well below the mmap threshold
EDGE_CHUNK = 16384
#: graphs with more edges than this recompute groups of chunks in the backward pass
CHECKPOINT_EDGES = 1 << 21
#: edges per checkpointed group (its stored intermediates are freed after its backward)
CHECKPOINT_GROUP = 1 << 19

#: (first atom, end atom, first edge, end edge) of one chunk
Chunk = tuple[int, int, int, int]


def atom_chunks(centers: torch.Tensor, n_atoms: int, size: int | None = None) -> list[Chunk]:
    """Split sorted edges into chunks of about ``size`` edges, each ending on an atom.

    Args:
        centers: (n_edges,) centre atom of each edge; chunking needs them sorted, and
            unsorted centres give one chunk (everything at once).
        n_atoms: number of atoms.
        size: edges per chunk (default EDGE_CHUNK).
    """
    size = size or EDGE_CHUNK
    n_edges = centers.shape[0]
    if tracing():  # one traced program for every size: no chunks
        return [(0, n_atoms, 0, n_edges)]
    if n_edges <= size or not bool((centers[1:] >= centers[:-1]).all()):
        return [(0, n_atoms, 0, n_edges)]
    ends = torch.cumsum(torch.bincount(centers, minlength=n_atoms), 0)  # edge end per atom
    targets = torch.arange(size, n_edges, size, device=centers.device)
    # a chunk closes after the first atom whose edges reach each multiple of size
    cuts = (torch.searchsorted(ends, targets) + 1).clamp(max=n_atoms).tolist()
    bounds = sorted({0, n_atoms, *cuts})
    ends = [0, *ends.tolist()]  # ends[a] = first edge of atom a
    return [(a0, a1, ends[a0], ends[a1]) for a0, a1 in zip(bounds[:-1], bounds[1:])]


def uniform_chunks(n_atoms: int, rows_per_atom: int, size: int | None = None) -> list[Chunk]:
    """Chunks of a neighbour matrix (rows_per_atom rows per atom) of about ``size`` rows."""
    if tracing():  # one traced program for every size: no chunks
        return [(0, n_atoms, 0, n_atoms * rows_per_atom)]
    size = size or EDGE_CHUNK
    step = max(1, size // max(rows_per_atom, 1))
    return [(a0, min(a0 + step, n_atoms), a0 * rows_per_atom,
             min(a0 + step, n_atoms) * rows_per_atom) for a0 in range(0, n_atoms, step)]


def split_edges(chunks: list[Chunk], *tensors: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Per chunk, the rows of each edge tensor: views made by one ``split``, whose backward
    is one concatenation (slicing chunk by chunk would build a full-size zero gradient per
    chunk: quadratic in the number of chunks)."""
    if len(chunks) == 1:
        return [tensors]
    sizes = [e1 - e0 for _, _, e0, e1 in chunks]
    return list(zip(*(t.split(sizes) for t in tensors)))


def map_chunks(function: Callable[[int], torch.Tensor], chunks: list[Chunk]) -> torch.Tensor:
    """cat([function(k) for k in range(len(chunks))]) along dim 0, checkpointing groups of
    chunks when the graph has more than CHECKPOINT_EDGES edges and gradients are on."""
    if len(chunks) == 1:
        return function(0)
    n_edges = chunks[-1][3] - chunks[0][2]
    if n_edges <= CHECKPOINT_EDGES or not torch.is_grad_enabled():
        return torch.cat([function(k) for k in range(len(chunks))])
    groups, current, edges = [], [], 0
    for k, chunk in enumerate(chunks):
        current.append(k)
        edges += chunk[3] - chunk[2]
        if edges >= CHECKPOINT_GROUP:
            groups.append(current)
            current, edges = [], 0
    if current:
        groups.append(current)

    def run(group: list[int]) -> torch.Tensor:
        return torch.cat([function(k) for k in group])

    return torch.cat([checkpoint(run, group, use_reentrant=False) for group in groups])


def release_before_backward(n_edges: int) -> None:
    """Hand the C heap's free pages back to the system before the backward pass of a graph
    large enough to be checkpointed (more than ``CHECKPOINT_EDGES`` edges); else nothing.

    The forward pass of such a graph frees many blocks of a few MB (each chunk's
    temporaries). glibc keeps them in its heap, where the backward's differently sized
    blocks fit badly, so the resident size at the backward's peak grows past what is in
    use. At 108,000 Cu atoms (float32, 4.6 M pairs, one call after a warm-up) NequIP
    peaked at 4.60-4.87 GiB with this trim against 5.59-5.72 without (interleaved runs);
    SchNet and MACE did not move. The trim takes 0.1-0.15 s and the backward faults the
    freed pages in again: NequIP's call was 2-3 s (about 10 %) slower, SchNet's and MACE's
    unchanged within the noise. Trimming before every checkpointed group instead, or again
    at each layer's backward, was measured no lower for NequIP and up to 2x slower for
    SchNet.
    """
    if n_edges > CHECKPOINT_EDGES:
        release_free_memory()


def release_free_memory() -> None:
    """glibc's ``malloc_trim(0)``: return every free page of the C heap to the operating
    system. A no-op where the C library has none (macOS, musl)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim``, or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None
