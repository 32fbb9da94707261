"""Batched direct solver of the Darcy 5-point system (see :mod:`pdes.darcy`): nested dissection
with one elimination plan per resolution, used by ``generate_darcy``.

Every sample at a resolution has the same matrix pattern, so the elimination order, the fill
and all index bookkeeping are worked out once (``_plan``); per sample only numbers move. The
interior grid is bisected recursively (x and y cuts in turn) down to 1-3 nodes. Bottom-up,
every *front* of a level eliminates its pivots (a box's separator, or a leaf box) against its
*ring* (the interior nodes just outside its box, where the fill of the box ends up):

    [P  C  g  ]   P: pivot block, C: pivot-ring coupling, g: pivot right-hand side,
    [C' F  g_r]   F, g_r: what the two child boxes left on the ring.

With P = L L' and [V | v] = L^-1 [C | g], the front hands [F - V'V | g_r - V'v] (the Schur
complement, i.e. exact Gaussian elimination) to its parent, and back substitution runs the
levels top-down: x_pivots = L^-T (v - V x_ring). All fronts of a level have the same padded
shape, so a level is a few gathers, one batched Cholesky, a triangular inverse by block
doubling and two batched matrix products. At 64x64 that is ~7 Mflop of BLAS per sample,
against SuperLU's per-sample ordering, symbolic and numeric factorisation in ``spsolve``.
Samples go through one at a time: a sample's fronts fit in the L2 cache, a batch does not.
Larger batches go to forked worker processes in chunks while the parent draws the random
fields (two threads measured no faster than one: numpy holds the GIL between its many small
calls).

Measured on the 2-core VM (benchmarks/data_generation.py, 64x64, 200 samples, no other load):
spsolve per sample 7.1-7.3 ms; this solver 2.3-2.4 ms per sample in one process (3.0x),
1.2-1.3 ms with two processes (5.4-5.9x), random fields (~0.3 ms) included. With other jobs
on both cores the second process gains little. Tried and dropped, by measurement: a banded
Cholesky (scipy.linalg.solveh_banded, bandwidth N-2) 2.3-2.6 ms per sample; splu with a
precomputed nested-dissection or MMD ordering 5-10 ms; batching samples through the levels
(all, or the top ones) and merging tree depths into larger fronts: slower or no gain.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["auto_workers", "dissection", "solve_batch"]


def _interior_forcing(f: float | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Return f on the interior nodes, shape ``shape[:-2] + (N-2, N-2)``.

    ``f`` is a scalar, an (N, N) nodal array, or an array of the full ``shape``.
    """
    f_arr = np.asarray(f, dtype=np.float64)
    if f_arr.ndim == 0:
        return np.full(shape[:-2] + (shape[-2] - 2, shape[-1] - 2), float(f_arr))
    if f_arr.shape not in (shape, shape[-2:]):
        raise ValueError(
            f"forcing must be a scalar or of shape {shape[-2:]} / {shape}, got {f_arr.shape}"
        )
    return np.broadcast_to(f_arr[..., 1:-1, 1:-1], shape[:-2] + (shape[-2] - 2, shape[-1] - 2))


def _ring_nodes(box: tuple[int, int, int, int], m: int) -> list[tuple[int, int]]:
    """Interior nodes 4-adjacent to ``box`` = [x0, x1) x [y0, y1) and outside it, sorted."""
    x0, x1, y0, y1 = box
    if x1 <= x0 or y1 <= y0:
        return []
    out = [(x0 - 1, y) for y in range(y0, y1)] + [(x1, y) for y in range(y0, y1)]
    out += [(x, y0 - 1) for x in range(x0, x1)] + [(x, y1) for x in range(x0, x1)]
    return sorted(p for p in out if 1 <= p[0] <= m and 1 <= p[1] <= m)


def _bisection_tree(m: int) -> tuple[list[list[tuple[int, int, int, int]]], list[list[list]]]:
    """Boxes and pivot lists per depth of the geometric nested dissection of the m x m interior.

    Node (x, y) is in padded grid coordinates (interior 1..m). Depth d has 2^d boxes; box i's
    children are 2i and 2i+1 at depth d+1. Pivots at depth d < D are the box separators, at the
    last depth D the nodes of the leaf boxes: at most three each, so that their pivot blocks
    take the closed-form path (splitting them further measured slower).
    """
    boxes = [[(1, m + 1, 1, m + 1)]]
    pivots = []
    axis = 0
    while max((b[1] - b[0]) * (b[3] - b[2]) for b in boxes[-1]) > 3:
        seps, nxt = [], []
        for x0, x1, y0, y1 in boxes[-1]:
            if axis == 0:  # cut at x = s; the lower half gets the smaller part of an odd split
                s = x0 + (x1 - x0 - 1) // 2
                seps.append([(s, y) for y in range(y0, y1)])
                nxt += [(x0, s, y0, y1), (s + 1, x1, y0, y1)]
            else:
                s = y0 + (y1 - y0 - 1) // 2
                seps.append([(x, s) for x in range(x0, x1)])
                nxt += [(x0, x1, y0, s), (x0, x1, s + 1, y1)]
        pivots.append(seps)
        boxes.append(nxt)
        axis = 1 - axis
    pivots.append([[(x, y) for x in range(b[0], b[1]) for y in range(b[2], b[3])]
                   for b in boxes[-1]])
    return boxes, pivots


@dataclass(frozen=True)
class _Level:
    """Index bookkeeping of one level of fronts, all padded to the same sizes.

    A front's pivot rows are stored as ``[P | C | g]``, shape (n_piv, n_piv + n_ring + 1); its
    output as ``[T | g_ring]``, shape (n_ring, n_ring + 1); a level's arrays are these over its
    fronts, flattened, and the output has one trailing zero that padding entries point to.
    Padded pivots are identity rows (their value, 0, goes to a trash slot of the grid); padded
    ring nodes read the grid's zero slot. "Table" indices point into a sample's coefficient
    table (see :func:`_coefficient_entries`); its zero slot stands for "no entry".
    """

    n_fronts: int
    n_piv: int
    n_ring: int
    child_rows: np.ndarray | None  # pivot rows from the child level (one child per entry)
    table_rows: np.ndarray | None  # leaves only: all pivot-row entries, from the table
    child_pg: tuple[np.ndarray, ...]  # [P | g] part, (n_fronts, n_piv, n_piv + 1) flat: the
    # 2nd, 3rd, ... child contribution to an entry (where children's rings overlap)
    table_pg: np.ndarray | None  # [P | g] part: matrix entries and forcing, from the table
    table_c_pos: np.ndarray | None  # pivot-row positions in C with a matrix entry ...
    table_c_src: np.ndarray | None  # ... from these table indices
    ring_rows: np.ndarray | None  # the output's F and g_ring part, from the child level
    pivots: np.ndarray  # (n_fronts * n_piv,) flat grid index of each pivot
    ring: np.ndarray  # (n_fronts * n_ring,) flat grid index of each ring node


def _coefficient_entries(piv: list, pos: dict, n: int, width: int) -> tuple[list, list]:
    """(position in a front's pivot rows, coefficient-table index) of its matrix entries.

    Table layout per sample (n = N padded side): [diagonal | x-coupling (i,j)-(i+1,j) |
    y-coupling (i,j)-(i,j+1) | forcing] over the flat N x N grid, then a 0 and a 1. An entry
    (p, q) belongs to the front where p or q is eliminated first; entries towards a child box
    were taken there already, so only couplings to pivots or ring nodes of this front remain.
    """
    size = n * n
    rows, srcs = [], []
    for j, (x, y) in enumerate(piv):
        flat = x * n + y
        rows += [j * width + j, j * width + width - 1]
        srcs += [flat, 3 * size + flat]
        for q, src in (((x - 1, y), size + flat - n), ((x + 1, y), size + flat),
                       ((x, y - 1), 2 * size + flat - 1), ((x, y + 1), 2 * size + flat)):
            if q in pos:
                rows.append(j * width + pos[q])
                srcs.append(src)
    return rows, srcs


def _child_entries(cpos: np.ndarray, k: int, rp: int, base: int,
                   rc: int) -> tuple[np.ndarray, ...]:
    """Where a child's output [T | g] lands in its parent front.

    ``cpos``: parent position (pivots first, then ring) of each real child ring node; ``base``:
    the child's offset in its level's output; ``rc``: the child level's padded ring size.
    Returns (pivot-row positions, sources, ring-row positions, sources). Entries of a ring row
    in a pivot column are the transpose of pivot-row entries and are not stored.
    """
    nc = cpos.size
    width = k + rp + 1
    col = np.append(cpos, k + rp)  # the child's g column goes to the parent's g column
    csrc = np.append(np.arange(nc), rc)
    src = base + np.arange(nc)[:, None] * (rc + 1) + csrc[None, :]
    row = np.broadcast_to(cpos[:, None], src.shape)
    colb = np.broadcast_to(col[None, :], src.shape)
    piv = row < k
    ring = ~piv & (colb >= k)
    piv_pos = row[piv] * width + colb[piv]
    ring_pos = (row[ring] - k) * (rp + 1) + (colb[ring] - k)
    return piv_pos, src[piv], ring_pos, src[ring]


def _pg_index(pos: np.ndarray, k: int, width: int) -> np.ndarray:
    """Map flat pivot-row positions (rows of ``width``) to the [P | g] layout; -1 for C."""
    row, col = np.divmod(pos, width)
    return np.where(col < k, row * (k + 1) + col,
                    np.where(col == width - 1, row * (k + 1) + k, -1))


def _level_table_entries(pivots: list, poss: list, k: int, rp: int,
                         n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Matrix entries of a level's pivot rows and its fronts' grid indices.

    Returns (pivot-row positions, table indices) of all entries from the coefficient table
    (padded pivots get identity rows), and the (n_fronts * k,) pivot and (n_fronts * rp,)
    ring grid indices (padding -> the grid's trash and zero slots).
    """
    size, width = n * n, k + rp + 1
    coef_pos, coef_src = [], []
    piv_idx = np.full((len(pivots), k), size + 1, dtype=np.intp)
    ring_idx = np.full((len(pivots), rp), size, dtype=np.intp)
    for i, (piv, pos) in enumerate(zip(pivots, poss, strict=True)):
        rows, srcs = _coefficient_entries(piv, pos, n, width)
        rows += [j * width + j for j in range(len(piv), k)]
        srcs += [4 * size + 1] * (k - len(piv))
        coef_pos += [i * k * width + r for r in rows]
        coef_src += srcs
        piv_idx[i, : len(piv)] = [x * n + y for x, y in piv]
        ring = [p for p, j in pos.items() if j >= k]
        ring_idx[i, : len(ring)] = [x * n + y for x, y in ring]
    return (np.array(coef_pos, dtype=np.intp), np.array(coef_src, dtype=np.intp),
            piv_idx.ravel(), ring_idx.ravel())


def _level_child_entries(poss: list, child: _Level, child_rings: list, k: int,
                         rp: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gathers of a level's pivot rows and output from its child level's output.

    Returns the pivot-row gather (first contribution per entry), the output gather (the F and
    g_ring part, plus the trailing zero), and (positions, sources) of further contributions
    (entries two children share). Missing entries point to the child output's trailing zero.
    """
    nb, rc, width = len(poss), child.n_ring, k + rp + 1
    czero = child.n_fronts * rc * (rc + 1)
    child_rows = np.full(nb * k * width, czero, dtype=np.intp)
    ring_rows = np.full(nb * rp * (rp + 1) + 1, czero, dtype=np.intp)
    more_pos, more_src = [], []
    span = child.n_fronts // nb
    for c, cring in enumerate(child_rings):
        i = c // span
        cpos = np.array([poss[i][p] for p in cring], dtype=np.intp)
        pp, ps, rpos, rs = _child_entries(cpos, k, rp, c * rc * (rc + 1), rc)
        ring_rows[i * rp * (rp + 1) + rpos] = rs
        pp = i * k * width + pp
        free = child_rows[pp] == czero
        child_rows[pp[free]] = ps[free]
        more_pos.append(pp[~free])
        more_src.append(ps[~free])
    return child_rows, ring_rows, np.concatenate(more_pos), np.concatenate(more_src)


def _ranked_gathers(pos: np.ndarray, src: np.ndarray, size: int, zero: int) -> tuple:
    """Split (position, source) pairs with repeated positions into gathers of ``size``.

    Gather r holds each position's (r+1)-th source (``zero`` elsewhere), so adding all the
    gathered arrays sums every position's sources without scattered in-place adds.
    """
    out = []
    while pos.size:
        first = np.unique(pos, return_index=True)[1]
        gather = np.full(size, zero, dtype=np.intp)
        gather[pos[first]] = src[first]
        out.append(gather)
        rest = np.ones(pos.size, dtype=bool)
        rest[first] = False
        pos, src = pos[rest], src[rest]
    return tuple(out)


def _build_level(pivots: list, rings: list, child: _Level | None, child_rings: list | None,
                 m: int) -> _Level:
    """Index arrays of one level from its fronts' pivot and ring node lists (see ``_Level``)."""
    n = m + 2
    k = max(1, max(len(p) for p in pivots))
    rp = max(len(r) for r in rings)
    width, zero = k + rp + 1, 4 * n * n  # the coefficient table's zero slot
    poss = [{p: j for j, p in enumerate(piv)} | {p: k + j for j, p in enumerate(ring)}
            for piv, ring in zip(pivots, rings, strict=True)]
    coef_pos, coef_src, piv_idx, ring_idx = _level_table_entries(pivots, poss, k, rp, n)
    common = dict(n_fronts=len(pivots), n_piv=k, n_ring=rp, pivots=piv_idx, ring=ring_idx)
    if child is None:  # leaves: every entry comes from the coefficient table
        table_rows = np.full(len(pivots) * k * width, zero, dtype=np.intp)
        table_rows[coef_pos] = coef_src
        return _Level(child_rows=None, table_rows=table_rows, child_pg=(), table_pg=None,
                      table_c_pos=None, table_c_src=None, ring_rows=None, **common)
    child_rows, ring_rows, more_pos, more_src = _level_child_entries(poss, child, child_rings,
                                                                     k, rp)
    # Entries with a further child source or a table entry sit in P and g (children share
    # only separator nodes), except the separator ends' couplings to the ring: the former are
    # gathered into a dense [P | g] block and added at once.
    pg, more_pg = _pg_index(coef_pos, k, width), _pg_index(more_pos, k, width)
    if np.any(more_pg < 0):
        raise RuntimeError("nested dissection plan: a C entry with two child sources")
    pg_size = len(pivots) * k * (k + 1)
    table_pg = np.full(pg_size, zero, dtype=np.intp)
    table_pg[pg[pg >= 0]] = coef_src[pg >= 0]
    czero = child.n_fronts * child.n_ring * (child.n_ring + 1)
    return _Level(child_rows=child_rows, table_rows=None,
                  child_pg=_ranked_gathers(more_pg, more_src, pg_size, czero),
                  table_pg=table_pg, table_c_pos=coef_pos[pg < 0], table_c_src=coef_src[pg < 0],
                  ring_rows=ring_rows, **common)


@lru_cache(maxsize=16)
def _plan(m: int) -> tuple[_Level, ...]:
    """Elimination plan for an m x m interior, levels bottom-up (leaves first, root last).

    One level per tree depth. (Merging two depths into one level, which writes fewer but
    larger Schur complements, measured no faster at 64 x 64: larger pivot blocks cost what
    the smaller outputs save.)
    """
    boxes, pivots = _bisection_tree(m)
    levels: list[_Level] = []
    child_rings = None
    for d in range(len(boxes) - 1, -1, -1):
        rings = [_ring_nodes(b, m) for b in boxes[d]]
        levels.append(_build_level(pivots[d], rings, levels[-1] if levels else None,
                                   child_rings, m))
        child_rings = rings
    return tuple(levels)


def _coefficient_table(a: np.ndarray, f: float | np.ndarray) -> np.ndarray:
    """Matrix entries and forcing of a batch ``a`` (n, N, N), shape (n, 4 N^2 + 2).

    Layout as in :func:`_coefficient_entries`; the same face averages as :func:`assemble_darcy`.
    """
    n_s, n, _ = a.shape
    size = n * n
    inv_h2 = float((n - 1) ** 2)
    table = np.zeros((n_s, 4 * size + 2))
    diag, cx, cy, rhs = (table[:, i * size : (i + 1) * size].reshape(n_s, n, n) for i in range(4))
    face_x = 0.5 * (a[:, 1:, :] + a[:, :-1, :])  # (n, N-1, N): face x_{i+1/2} at y_j
    face_y = 0.5 * (a[:, :, 1:] + a[:, :, :-1])
    diag[:, 1:-1, 1:-1] = (face_x[:, 1:, 1:-1] + face_x[:, :-1, 1:-1] + face_y[:, 1:-1, 1:]
                           + face_y[:, 1:-1, :-1]) * inv_h2
    cx[:, 1:-2, 1:-1] = -face_x[:, 1:-1, 1:-1] * inv_h2  # interior-interior pairs only
    cy[:, 1:-1, 1:-2] = -face_y[:, 1:-1, 1:-1] * inv_h2
    rhs[:, 1:-1, 1:-1] = _interior_forcing(f, a.shape)
    table[:, -1] = 1.0
    return table


def _strided(x: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
    """Writable view of the contiguous array ``x`` with the given shape and byte strides."""
    return np.ndarray(shape, dtype=x.dtype, buffer=x, strides=strides)


class _LevelBuffers:
    """Arrays of one level for one sample: pivot rows, L^-1, [V | v], output, temporaries.

    ``rows``, ``pg``, ``out``, ``child`` and ``mm`` are views into buffers shared between
    levels (a level's output is only read by the next one); ``linv`` and ``w`` are kept per
    level for the back substitution.
    """

    def __init__(self, lv: _Level, rows: np.ndarray, pg: np.ndarray, out: np.ndarray,
                 child: np.ndarray | None, mm: np.ndarray) -> None:
        nb, k, rp = lv.n_fronts, lv.n_piv, lv.n_ring
        self.rows = rows[: nb * k * (k + rp + 1)]
        rows3 = self.rows.reshape(nb, k, k + rp + 1)
        self.p, self.cg, self.g = rows3[..., :k], rows3[..., k:], rows3[..., -1:]
        self.pg_flat = pg[: nb * k * (k + 1)]
        self.pg = self.pg_flat.reshape(nb, k, k + 1)
        self.pg_tmp = np.empty(nb * k * (k + 1))
        kk = 1 << (k - 1).bit_length()  # the block doubling works on a power-of-two size
        self.linv_pad = np.zeros((nb, kk, kk))
        it = self.linv_pad.itemsize
        self.diag = _strided(self.linv_pad, (nb, kk), (kk * kk * it, (kk + 1) * it))
        self.diag[:] = 1.0  # padding is an identity block, which the doubling leaves alone
        self.linv = self.linv_pad[:, :k, :k]
        self.steps = []
        s = 1
        while s < kk:  # diagonal blocks of size 2s: [[A, 0], [B, D]] with A, D inverted
            blk = _strided(self.linv_pad, (nb, kk // (2 * s), 2 * s, 2 * s),
                           (kk * kk * it, 2 * s * (kk + 1) * it, kk * it, it))
            a, b, d = blk[..., :s, :s], blk[..., s:, :s], blk[..., s:, s:]
            self.steps.append((a, b, d, np.empty(a.shape)))
            s *= 2
        self.w = np.empty((nb, k, rp + 1))
        self.vt = np.swapaxes(self.w[..., :rp], 1, 2)
        self.out = out[: nb * rp * (rp + 1) + 1]
        self.t = self.out[:-1].reshape(nb, rp, rp + 1)
        self.child = child
        self.mm = mm[: nb * rp * (rp + 1)].reshape(nb, rp, rp + 1)
        self.xr = np.empty((nb, rp, 1))
        self.y = np.empty((nb, k, 1))
        self.xs = np.empty((nb, k, 1))


def _assemble(lv: _Level, lb: _LevelBuffers, table: np.ndarray, pg_vals: np.ndarray | None,
              c_vals: np.ndarray | None) -> None:
    """Gather one level's pivot rows [P | C | g] for one sample (``table``: its table row)."""
    if lv.table_rows is not None:
        np.take(table, lv.table_rows, out=lb.rows, mode="clip")
        return
    np.take(lb.child, lv.child_rows, out=lb.rows, mode="clip")
    # P and g also get further children's shares and the matrix entries: dense adds of one
    # [P | g] block are much cheaper than scattered in-place adds.
    pg = pg_vals
    for extra in lv.child_pg:
        np.take(lb.child, extra, out=lb.pg_tmp, mode="clip")
        np.add(lb.pg_tmp, pg, out=lb.pg_flat)
        pg = lb.pg_flat
    pg = pg.reshape(lb.pg.shape)
    k = lv.n_piv
    lb.p += pg[..., :k]
    lb.g += pg[..., k:]
    # The separator ends' couplings to the ring: no child has those entries, so set them.
    lb.rows[lv.table_c_pos] = c_vals


def _small_inverse_factor(p: np.ndarray, linv: np.ndarray) -> None:
    """L^-1 of P = L L' for a batch of 2 x 2 or 3 x 3 blocks ``p`` (nb, k, k), into ``linv``.

    Closed-form Cholesky and inversion on (nb,) vectors: for hundreds of tiny blocks this is
    several times cheaper than a batched LAPACK call plus the block doubling.
    """
    i00 = 1.0 / np.sqrt(p[:, 0, 0])
    l10 = p[:, 1, 0] * i00
    i11 = 1.0 / np.sqrt(p[:, 1, 1] - l10 * l10)
    i10 = -l10 * i00 * i11
    linv[:, 0, 0], linv[:, 1, 0], linv[:, 1, 1] = i00, i10, i11
    if p.shape[-1] == 3:
        l20 = p[:, 2, 0] * i00
        l21 = (p[:, 2, 1] - l20 * l10) * i11
        i22 = 1.0 / np.sqrt(p[:, 2, 2] - l20 * l20 - l21 * l21)
        linv[:, 2, 0] = -(l20 * i00 + l21 * i10) * i22
        linv[:, 2, 1] = -l21 * i11 * i22
        linv[:, 2, 2] = i22


def _eliminate(lv: _Level, lb: _LevelBuffers) -> None:
    """Forward elimination of one assembled level: fills ``linv``, ``w`` and ``out``."""
    if lv.n_piv == 1:  # a 1 x 1 pivot block: no LAPACK call needed
        np.sqrt(lb.p, out=lb.linv)
        np.reciprocal(lb.linv, out=lb.linv)
        np.multiply(lb.cg, lb.linv, out=lb.w)
    elif lv.n_piv <= 3:
        _small_inverse_factor(lb.p, lb.linv)
        np.matmul(lb.linv, lb.cg, out=lb.w)
    else:
        # L^-1 by block doubling: inv([[A, 0], [B, D]]) = [[A^-1, 0], [D^-1 (-B) A^-1, D^-1]],
        # all diagonal blocks of one size at once (log2 steps of batched products). Starting
        # from -L (diagonal then set to 1/L_ii) saves the negation in every step.
        np.negative(np.linalg.cholesky(lb.p), out=lb.linv)
        np.divide(-1.0, lb.diag, out=lb.diag)
        for a, b, d, tmp in lb.steps:
            if a.shape[-1] == 1:
                b *= d
                b *= a
            else:
                np.matmul(b, a, out=tmp)
                np.matmul(d, tmp, out=b)
        np.matmul(lb.linv, lb.cg, out=lb.w)
    if lv.n_ring == 0:
        return
    vtw = lb.t if lb.child is None else lb.mm
    if lv.n_piv == 1:  # outer products: one einsum beats many 1-term matrix products
        np.einsum("ni,nj->nij", lb.w[:, 0, :-1], lb.w[:, 0], out=vtw)
    else:
        np.matmul(lb.vt, lb.w, out=vtw)
    if lb.child is None:
        np.negative(lb.t, out=lb.t)
        lb.out[-1] = 0.0
    else:
        np.take(lb.child, lv.ring_rows, out=lb.out, mode="clip")
        np.subtract(lb.t, lb.mm, out=lb.t)


def _substitute(lv: _Level, lb: _LevelBuffers, grid: np.ndarray) -> None:
    """Back substitution of one level: x_pivots = L^-T (v - V x_ring), written into ``grid``."""
    rp = lv.n_ring
    if rp:
        np.take(grid, lv.ring, out=lb.xr.reshape(-1), mode="clip")
        np.matmul(lb.w[..., :rp], lb.xr, out=lb.y)
        np.subtract(lb.w[..., rp:], lb.y, out=lb.y)
    else:
        lb.y[...] = lb.w
    np.matmul(np.swapaxes(lb.linv, 1, 2), lb.y, out=lb.xs)
    grid[lv.pivots] = lb.xs.reshape(-1)


class _Workspace:
    """All buffers to solve one sample at a time on one plan; reuse it across samples.

    One sample at a time keeps a level's fronts in the L2 cache; batching samples through a
    level (tried: all levels, or only the top ones with few fronts) measured slower.
    """

    def __init__(self, plan: tuple[_Level, ...], n: int) -> None:
        def rows_size(lv: _Level) -> int:
            return lv.n_fronts * lv.n_piv * (lv.n_piv + lv.n_ring + 1)

        def out_size(lv: _Level) -> int:
            return lv.n_fronts * lv.n_ring * (lv.n_ring + 1) + 1

        rows = np.empty(max(rows_size(lv) for lv in plan))
        pg = np.empty(max(lv.n_fronts * lv.n_piv * (lv.n_piv + 1) for lv in plan))
        outs = [np.empty(max(out_size(lv) for lv in plan)) for _ in range(2)]
        mm = np.empty(max(out_size(lv) for lv in plan))
        self.levels = []
        for i, lv in enumerate(plan):
            child = outs[(i - 1) % 2] if i else None
            self.levels.append((lv, _LevelBuffers(lv, rows, pg, outs[i % 2], child, mm)))
        # Grid of the solution plus a zero slot (read by padded ring entries) and a trash slot
        # (written by padded pivots); boundary nodes are never written, so they stay 0.
        self.grid = np.zeros(n * n + 2)

    def solve(self, table: np.ndarray, pg_vals: list, c_vals: list) -> np.ndarray:
        """Solve one sample: ``table`` its coefficient table row, ``pg_vals[i]`` / ``c_vals[i]``
        its table entries at level i's ``table_pg`` / ``table_c_src`` (None for leaves).

        Returns the flat solution grid (N * N + 2,), valid until the next call.
        """
        for (lv, lb), pgv, cv in zip(self.levels, pg_vals, c_vals, strict=True):
            _assemble(lv, lb, table, pgv, cv)
            _eliminate(lv, lb)
        for lv, lb in reversed(self.levels):
            _substitute(lv, lb, self.grid)
        return self.grid


def _solve_chunk(ws: _Workspace, a: np.ndarray, f: np.ndarray, u: np.ndarray,
                 progress: Callable[[int], None] | None = None) -> None:
    """Solve the samples ``a`` (c, N, N) into ``u`` (c, N, N) with workspace ``ws``.

    ``f``: (N, N) nodal forcing or (c, N, N); the table entries of all c samples are gathered
    at once (fewer calls), the eliminations run one sample at a time (cache-resident fronts).
    """
    n = a.shape[-1]
    table = _coefficient_table(a, f)
    plan = [lv for lv, _ in ws.levels]
    pg_vals = [None if lv.table_pg is None else np.take(table, lv.table_pg, axis=1)
               for lv in plan]
    c_vals = [None if lv.table_c_src is None else np.take(table, lv.table_c_src, axis=1)
              for lv in plan]
    for j in range(a.shape[0]):
        grid = ws.solve(table[j], [None if v is None else v[j] for v in pg_vals],
                        [None if v is None else v[j] for v in c_vals])
        u[j] = grid[: n * n].reshape(n, n)
        if progress is not None:
            progress(1)


_CHUNK = 8  # samples per table build / per unit of work handed to a worker process


def _chunk_forcing(f: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The forcing of samples [start, stop): per-sample arrays are sliced, (N, N) shared."""
    return f[start:stop] if f.ndim == 3 else f


def _chunk_range(c: int, n_samples: int) -> tuple[int, int]:
    """Samples [start, stop) of chunk ``c``."""
    return c * _CHUNK, min((c + 1) * _CHUNK, n_samples)


class _SharedRun:
    """What the parent and its forked workers share while solving one batch: the coefficients
    ``a`` and solutions ``u`` (n, N, N) in shared memory, how many leading samples of ``a`` are
    drawn, the next chunk to hand out, and which chunks are done."""

    def __init__(self, ctx: Any, shape: tuple[int, int, int]) -> None:
        size = shape[0] * shape[1] * shape[2]
        self.a = np.frombuffer(ctx.RawArray("d", size), dtype=np.float64).reshape(shape)
        self.u = np.frombuffer(ctx.RawArray("d", size), dtype=np.float64).reshape(shape)
        self.drawn = ctx.Value("l", 0)
        self.next_chunk = ctx.Value("l", 0)
        self.done = ctx.RawArray("b", -(-shape[0] // _CHUNK))

    def publish(self, start: int, block: np.ndarray) -> None:
        """Write drawn coefficients for samples [start, start + len(block)) and announce them."""
        self.a[start : start + block.shape[0]] = block
        with self.drawn.get_lock():  # the lock also orders the writes to ``a`` before it
            self.drawn.value = start + block.shape[0]

    def finished(self) -> int:
        """Samples in chunks marked done."""
        n = self.a.shape[0]
        return sum(_chunk_range(c, n)[1] - _chunk_range(c, n)[0]
                   for c in range(len(self.done)) if self.done[c])


def _dissection_worker(run: _SharedRun, f: np.ndarray,
                       on_chunk: Callable[[], None] | None = None) -> None:
    """Worker loop (also run by the parent): take the next chunk, solve it, mark it done.

    The parent draws ahead of the solvers, so the wait for a chunk's coefficients is rare and
    short (only at the start).
    """
    n_samples, n = run.a.shape[0], run.a.shape[-1]
    ws = _Workspace(_plan(n - 2), n)
    while True:
        with run.next_chunk.get_lock():
            c = run.next_chunk.value
            run.next_chunk.value = c + 1
        if c >= len(run.done):
            return
        start, stop = _chunk_range(c, n_samples)
        while run.drawn.value < stop:
            time.sleep(2e-4)
        _solve_chunk(ws, run.a[start:stop], _chunk_forcing(f, start, stop), run.u[start:stop])
        run.done[c] = 1
        if on_chunk is not None:
            on_chunk()


def _dissection_parallel(n_samples: int, draw: Callable[[int], np.ndarray], f: np.ndarray,
                         workers: int, progress: Callable[[int], None] | None,
                         ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_dissection` over ``workers`` forked processes sharing ``a`` and ``u``.

    The parent draws the coefficients chunk by chunk while the workers already solve (the
    draws must stay in order: one random stream), then solves too. Chunks are handed out by a
    shared counter, so a process slowed by other load does less; a sample's arithmetic is the
    same in any process, so the result is too. A chunk left unfinished (a worker died) is
    solved here afterwards.
    """
    ctx = multiprocessing.get_context("fork")
    first = draw(min(_CHUNK, n_samples))  # argument errors surface before anything forks
    run = _SharedRun(ctx, (n_samples, *first.shape[1:]))
    run.publish(0, first)
    _plan(first.shape[-1] - 2)  # built once here, inherited by the forked workers
    reported = [0]  # samples reported to ``progress`` so far, by any process

    def report() -> None:
        finished = run.finished()
        for _ in range(finished - reported[0]):
            progress(1)
        reported[0] = finished

    procs = [ctx.Process(target=_dissection_worker, args=(run, f), daemon=True)
             for _ in range(workers - 1)]
    try:
        for proc in procs:
            proc.start()
        for start in range(first.shape[0], n_samples, _CHUNK):
            run.publish(start, draw(min(_CHUNK, n_samples - start)))
        _dissection_worker(run, f, report if progress is not None else None)
        for proc in procs:
            proc.join()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    missing = [c for c in range(len(run.done)) if not run.done[c]]
    if missing:
        ws = _Workspace(_plan(first.shape[-1] - 2), first.shape[-1])
        for c in missing:
            start, stop = _chunk_range(c, n_samples)
            _solve_chunk(ws, run.a[start:stop], _chunk_forcing(f, start, stop),
                         run.u[start:stop])
            run.done[c] = 1
    if progress is not None:
        report()
    return run.a.copy(), run.u.copy()


def _can_fork() -> bool:
    """Whether worker processes may be forked here: Linux (cheap, safe fork), and not inside
    a daemonic process (multiprocessing forbids those children)."""
    return sys.platform.startswith("linux") and not multiprocessing.current_process().daemon


def auto_workers(n_samples: int) -> int:
    """Processes for ``n_samples``: the usable cores (at most 4) once there are enough
    samples to pay for forking (a few ms), where forking is possible."""
    if n_samples < 4 * _CHUNK or not _can_fork():
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0))))


def dissection(n_samples: int, draw: Callable[[int], np.ndarray], f: float | np.ndarray,
                progress: Callable[[int], None] | None, workers: int,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients ``a`` and solutions ``u``, each (n_samples, N, N), by nested dissection.

    ``draw(count)`` returns the next ``count`` coefficient fields (called in order, chunk by
    chunk when solving in parallel, else once for all). ``f`` as in :func:`solve_darcy`
    (scalar, (N, N) or (n_samples, N, N)). ``progress(1)`` per solved sample. ``workers`` > 1
    spreads the samples over that many forked processes (if :func:`_can_fork`, and there is
    more than one chunk).
    """
    f_arr = np.asarray(f, dtype=np.float64)
    if workers > 1 and n_samples > _CHUNK and _can_fork():
        return _dissection_parallel(n_samples, draw, f_arr, workers, progress)
    a = np.ascontiguousarray(draw(n_samples), dtype=np.float64)
    ws = _Workspace(_plan(a.shape[-1] - 2), a.shape[-1])
    u = np.zeros_like(a)
    for start in range(0, n_samples, _CHUNK):
        stop = min(start + _CHUNK, n_samples)
        _solve_chunk(ws, a[start:stop], _chunk_forcing(f_arr, start, stop), u[start:stop],
                     progress)
    return a, u


def solve_batch(a: np.ndarray, f: float | np.ndarray,
                      progress: Callable[[int], None] | None = None,
                      workers: int = 1) -> np.ndarray:
    """Solve a batch ``a`` (n, N, N) by nested dissection; returns u (n, N, N), zero boundary.

    ``f``, ``progress``, ``workers`` as in :func:`_dissection`. Samples are independent, so
    the result does not depend on how they are grouped or distributed over processes.
    """
    a = np.asarray(a, dtype=np.float64)
    taken = [0]

    def draw(count: int) -> np.ndarray:
        taken[0] += count
        return a[taken[0] - count : taken[0]]

    return dissection(a.shape[0], draw, f, progress, workers)[1]
