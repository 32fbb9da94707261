"""2-D Darcy flow ``-div(a grad u) = f`` on the unit square with ``u = 0`` on the boundary.

Discretisation (shared by the solver, the residual and every check built on them):

* ``resolution`` = N nodes per side *including* the boundary, spacing ``h = 1/(N-1)``;
  node ``(i, j)`` sits at ``(x_i, y_j) = (i h, j h)`` and arrays are indexed ``[i, j]``
  (first axis x).
* ``a`` is given at the nodes; the coefficient on the face between two neighbouring nodes is
  the arithmetic mean of their values (second-order accurate for smooth ``a``).
* 5-point finite differences on the ``(N-2)^2`` interior unknowns, numbered in C order of the
  interior block ``u[1:-1, 1:-1]``.

Units: the problem is non-dimensional (unit square, ``a`` a permeability ratio, ``f`` a unit
source), so ``u`` carries units of ``f / a`` times length squared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from pdes.grf import gaussian_random_field

__all__ = [
    "TORSION_MAX",
    "assemble_darcy",
    "darcy_coefficient",
    "darcy_residual",
    "generate_darcy",
    "solve_darcy",
]

# Maximum of the torsion function (-Laplace u = 1, u = 0 on the boundary) on the unit square,
# about 0.07367 (attained at the centre). For f = 1 the data must satisfy
# 0 <= u <= TORSION_MAX / min(a): the lower bound is the discrete maximum principle (the
# matrix is an M-matrix), the upper one is exact for constant a. For variable a it is a sharp
# empirical check, not a theorem: the rigorous 2-D bound (Talenti symmetrisation) is the
# looser 1 / (4 pi min(a)) ~= 0.0796 / min(a).
TORSION_MAX = 0.0737


def darcy_coefficient(field: np.ndarray, high: float = 12.0, low: float = 3.0) -> np.ndarray:
    """Threshold a field into a two-valued coefficient: ``where(field >= 0, high, low)``.

    ``field`` has any shape (typically (n, N, N) from :func:`gaussian_random_field`); the
    result has the same shape, float64, dimensionless permeability (FNO recipe: 12 and 3).
    """
    if not (np.isfinite(high) and np.isfinite(low) and high > 0 and low > 0):
        raise ValueError(f"high and low must be positive and finite, got high={high}, low={low}")
    field = np.asarray(field, dtype=np.float64)
    return np.where(field >= 0.0, float(high), float(low))


def _check_coefficient(a: np.ndarray) -> np.ndarray:
    """Validate one nodal coefficient: (N, N), N >= 3, finite and strictly positive."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"coefficient must be a square (N, N) array, got shape {a.shape}")
    if a.shape[0] < 3:
        raise ValueError(f"need N >= 3 nodes per side for an interior unknown, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("coefficient contains NaN or Inf")
    if np.min(a) <= 0.0:
        raise ValueError(f"coefficient must be strictly positive, min is {np.min(a)}")
    return a


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


def assemble_darcy(a: np.ndarray) -> sp.csr_matrix:
    """Assemble the 5-point matrix of ``-div(a grad .)`` for one (N, N) nodal coefficient.

    Returns a symmetric positive definite ``scipy.sparse.csr_matrix`` of shape
    ((N-2)^2, (N-2)^2) acting on interior unknowns in C order; entries carry the ``1/h^2``.
    Boundary values are zero, so their couplings are simply dropped.
    """
    a = _check_coefficient(a)
    n_nodes = a.shape[0]
    m = n_nodes - 2
    inv_h2 = float((n_nodes - 1) ** 2)
    face_x = 0.5 * (a[1:, :] + a[:-1, :])  # (N-1, N): face x_{i+1/2} at y_j
    face_y = 0.5 * (a[:, 1:] + a[:, :-1])  # (N, N-1): face y_{j+1/2} at x_i
    east, west = face_x[1:, 1:-1], face_x[:-1, 1:-1]  # (N-2, N-2) around interior nodes
    north, south = face_y[1:-1, 1:], face_y[1:-1, :-1]
    idx = np.arange(m * m).reshape(m, m)
    diag = (east + west + north + south) * inv_h2
    # Interior-interior couplings; each appears twice (symmetric) with the shared face value.
    off_x = -east[:-1, :] * inv_h2
    off_y = -north[:, :-1] * inv_h2
    # (row block, column block, value block): the diagonal, then each coupling both ways.
    blocks = [
        (idx, idx, diag),
        (idx[:-1, :], idx[1:, :], off_x),
        (idx[1:, :], idx[:-1, :], off_x),
        (idx[:, :-1], idx[:, 1:], off_y),
        (idx[:, 1:], idx[:, :-1], off_y),
    ]
    rows = np.concatenate([r.ravel() for r, _, _ in blocks])
    cols = np.concatenate([c.ravel() for _, c, _ in blocks])
    vals = np.concatenate([v.ravel() for _, _, v in blocks])
    return sp.csr_matrix((vals, (rows, cols)), shape=(m * m, m * m))


def solve_darcy(a: np.ndarray, f: float | np.ndarray = 1.0) -> np.ndarray:
    """Solve ``-div(a grad u) = f``, ``u = 0`` on the boundary, for one sample.

    ``a``: (N, N) nodal coefficient, strictly positive. ``f``: scalar or (N, N) nodal source
    (only interior values are used). Returns ``u`` of shape (N, N), float64, zero boundary.
    Uses a sparse direct solve (``scipy.sparse.linalg.spsolve``).
    """
    a = _check_coefficient(a)
    rhs = _interior_forcing(f, a.shape)
    if not np.all(np.isfinite(rhs)):
        raise ValueError("forcing contains NaN or Inf on the interior")
    u = np.zeros_like(a)
    u[1:-1, 1:-1] = spsolve(assemble_darcy(a), rhs.ravel()).reshape(rhs.shape)
    return u


def darcy_residual(a: np.ndarray, u: np.ndarray, f: float | np.ndarray = 1.0) -> np.ndarray | float:
    """Relative discrete residual ``||(-div a grad u)_h - f||_2 / ||f||_2`` per sample.

    ``a``, ``u``: (n, N, N) batches (or a single (N, N) pair), same shape. ``f``: scalar,
    (N, N) or (n, N, N) nodal source. Norms run over interior nodes; the stencil uses ``u`` on
    the boundary as given (boundary violations are not counted here). Returns shape (n,), or
    a float for a single pair. NaN/Inf in the inputs propagate to the output; nothing raises
    for non-finite values.
    """
    a = np.asarray(a, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    if a.shape != u.shape:
        raise ValueError(f"a and u must have the same shape, got {a.shape} and {u.shape}")
    single = a.ndim == 2
    if single:
        a, u = a[None], u[None]
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] < 3:
        raise ValueError(f"expected (n, N, N) or (N, N) arrays with N >= 3, got {a.shape}")
    rhs = _interior_forcing(f, a.shape)
    f_norm = np.sqrt(np.sum(rhs**2, axis=(1, 2)))
    if np.any(f_norm == 0.0):
        raise ValueError("forcing is zero on the interior; the relative residual is undefined")
    inv_h2 = float((a.shape[1] - 1) ** 2)
    # Non-finite inputs are meant to come out as NaN/Inf, so their warnings are noise.
    with np.errstate(invalid="ignore", over="ignore"):
        flux_x = 0.5 * (a[:, 1:, :] + a[:, :-1, :]) * (u[:, 1:, :] - u[:, :-1, :])
        flux_y = 0.5 * (a[:, :, 1:] + a[:, :, :-1]) * (u[:, :, 1:] - u[:, :, :-1])
        div_x = flux_x[:, 1:, 1:-1] - flux_x[:, :-1, 1:-1]  # (n, N-2, N-2), times 1/h^2 below
        div_y = flux_y[:, 1:-1, 1:] - flux_y[:, 1:-1, :-1]
        res = -(div_x + div_y) * inv_h2 - rhs
        rel = np.sqrt(np.sum(res**2, axis=(1, 2))) / f_norm
    return float(rel[0]) if single else rel


# ---------------------------------------------------------------------------------------------
# Batched direct solver: nested dissection with one elimination plan per resolution
# ---------------------------------------------------------------------------------------------
#
# Every sample at a resolution has the same matrix pattern, so the elimination order, the fill
# and all index bookkeeping are worked out once (``_plan``); per sample only numbers move. The
# interior grid is bisected recursively (x and y cuts in turn) down to single nodes. Bottom-up,
# every *front* of a level eliminates its pivots (a box's separator, or a leaf node) against its
# *ring* (the interior nodes just outside its box, where the fill of the box ends up):
#
#     [P  C  g  ]   P: pivot block, C: pivot-ring coupling, g: pivot right-hand side,
#     [C' F  g_r]   F, g_r: what the two child boxes left on the ring.
#
# With P = L L' and [V | v] = L^-1 [C | g], the front hands [F - V'V | g_r - V'v] (the Schur
# complement, i.e. exact Gaussian elimination) to its parent, and back substitution runs the
# levels top-down: x_pivots = L^-T (v - V x_ring). All fronts of a level have the same padded
# shape, so a level is a few gathers, one batched Cholesky, a triangular inverse by block
# doubling and two batched matrix products. At 64x64 that is ~7 Mflop of BLAS per sample,
# against SuperLU's per-sample ordering, symbolic and numeric factorisation in ``spsolve``.
# Samples go through one at a time: a sample's fronts fit in the L2 cache, a batch does not.


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
    last depth D the nodes of the leaf boxes (at most one node each).
    """
    boxes = [[(1, m + 1, 1, m + 1)]]
    pivots = []
    axis = 0
    while max(max(b[1] - b[0], b[3] - b[2]) for b in boxes[-1]) > 1:
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
    ring nodes read the grid's zero slot.
    """

    n_fronts: int
    n_piv: int
    n_ring: int
    child_rows: np.ndarray | None  # pivot rows gathered from the child level (first source)
    extra_pos: np.ndarray  # pivot-row positions that also get a second child entry ...
    extra_src: np.ndarray  # ... from these child-output indices
    coef_pos: np.ndarray  # pivot-row positions that get a matrix or forcing entry ...
    coef_src: np.ndarray  # ... from these coefficient-table indices
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


def _build_level(pivots: list, rings: list, child: _Level | None, child_rings: list | None,
                 m: int) -> _Level:
    """Index arrays of one level from its fronts' pivot and ring node lists (see ``_Level``)."""
    n = m + 2
    size = n * n
    nb = len(pivots)
    k = max(1, max(len(p) for p in pivots))
    rp = max(len(r) for r in rings)
    width = k + rp + 1
    coef_pos, coef_src = [], []
    piv_idx = np.full((nb, k), size + 1, dtype=np.intp)  # padding -> grid trash slot
    ring_idx = np.full((nb, rp), size, dtype=np.intp)  # padding -> grid zero slot
    child_rows = ring_rows = None
    extra_pos, extra_src = [], []
    if child is not None:
        rc = child.n_ring
        czero = child.n_fronts * rc * (rc + 1)  # the child level's trailing zero
        child_rows = np.full(nb * k * width, czero, dtype=np.intp)
        ring_rows = np.full(nb * rp * (rp + 1) + 1, czero, dtype=np.intp)
    for i, (piv, ring) in enumerate(zip(pivots, rings, strict=True)):
        pos = {p: j for j, p in enumerate(piv)} | {p: k + j for j, p in enumerate(ring)}
        rows, srcs = _coefficient_entries(piv, pos, n, width)
        rows += [j * width + j for j in range(len(piv), k)]  # identity rows for padding
        srcs += [4 * size + 1] * (k - len(piv))
        coef_pos += [i * k * width + r for r in rows]
        coef_src += srcs
        piv_idx[i, : len(piv)] = [x * n + y for x, y in piv]
        ring_idx[i, : len(ring)] = [x * n + y for x, y in ring]
        if child is None:
            continue
        span = child.n_fronts // nb
        for c in range(i * span, (i + 1) * span):
            cpos = np.array([pos[p] for p in child_rings[c]], dtype=np.intp)
            pp, ps, rpos, rs = _child_entries(cpos, k, rp, c * rc * (rc + 1), rc)
            ring_rows[i * rp * (rp + 1) + rpos] = rs
            pp = i * k * width + pp
            free = child_rows[pp] == czero  # first contribution, or a second one to add
            child_rows[pp[free]] = ps[free]
            extra_pos.append(pp[~free])
            extra_src.append(ps[~free])
    empty = np.zeros(0, dtype=np.intp)
    return _Level(
        n_fronts=nb, n_piv=k, n_ring=rp, child_rows=child_rows,
        extra_pos=np.concatenate(extra_pos) if extra_pos else empty,
        extra_src=np.concatenate(extra_src) if extra_src else empty,
        coef_pos=np.array(coef_pos, dtype=np.intp), coef_src=np.array(coef_src, dtype=np.intp),
        ring_rows=ring_rows, pivots=piv_idx.ravel(), ring=ring_idx.ravel(),
    )


@lru_cache(maxsize=16)
def _plan(m: int) -> tuple[_Level, ...]:
    """Elimination plan for an m x m interior, levels bottom-up (leaves first, root last)."""
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

    ``rows``, ``out``, ``child`` and ``mm`` are views into buffers shared between levels (a
    level's output is only read by the next one); ``linv`` and ``w`` are kept per level for
    the back substitution.
    """

    def __init__(self, lv: _Level, rows: np.ndarray, out: np.ndarray, child: np.ndarray | None,
                 mm: np.ndarray) -> None:
        nb, k, rp = lv.n_fronts, lv.n_piv, lv.n_ring
        self.rows = rows[: nb * k * (k + rp + 1)]
        rows3 = self.rows.reshape(nb, k, k + rp + 1)
        self.p, self.cg = rows3[..., :k], rows3[..., k:]
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


def _eliminate(lv: _Level, lb: _LevelBuffers, coef_vals: np.ndarray) -> None:
    """Forward elimination of one level for one sample: fills ``linv``, ``w`` and ``out``."""
    rows = lb.rows
    if lb.child is None:
        rows[:] = 0.0
    else:
        np.take(lb.child, lv.child_rows, out=rows, mode="clip")
        rows[lv.extra_pos] += lb.child[lv.extra_src]
    rows[lv.coef_pos] += coef_vals
    if lv.n_piv == 1:  # a 1 x 1 pivot block: no LAPACK call needed
        np.sqrt(lb.p, out=lb.linv)
        np.reciprocal(lb.linv, out=lb.linv)
        np.multiply(lb.cg, lb.linv, out=lb.w)
    else:
        lb.linv[...] = np.linalg.cholesky(lb.p)
        # L^-1 by block doubling: inv([[A, 0], [B, D]]) = [[A^-1, 0], [-D^-1 B A^-1, D^-1]],
        # with all diagonal blocks of one size done at once (log2 steps of batched products).
        np.reciprocal(lb.diag, out=lb.diag)
        for a, b, d, tmp in lb.steps:
            if a.shape[-1] == 1:
                b *= d
                b *= a
            else:
                np.matmul(b, a, out=tmp)
                np.matmul(d, tmp, out=b)
            np.negative(b, out=b)
        np.matmul(lb.linv, lb.cg, out=lb.w)
    if lv.n_ring == 0:
        return
    if lb.child is None:
        np.matmul(lb.vt, lb.w, out=lb.t)
        np.negative(lb.t, out=lb.t)
        lb.out[-1] = 0.0
    else:
        np.take(lb.child, lv.ring_rows, out=lb.out, mode="clip")
        np.matmul(lb.vt, lb.w, out=lb.mm)
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
    """All buffers to solve one sample at a time on one plan; reuse it across samples."""

    def __init__(self, plan: tuple[_Level, ...], n: int) -> None:
        def rows_size(lv: _Level) -> int:
            return lv.n_fronts * lv.n_piv * (lv.n_piv + lv.n_ring + 1)

        def out_size(lv: _Level) -> int:
            return lv.n_fronts * lv.n_ring * (lv.n_ring + 1) + 1

        rows = np.empty(max(rows_size(lv) for lv in plan))
        outs = [np.empty(max(out_size(lv) for lv in plan)) for _ in range(2)]
        mm = np.empty(max(out_size(lv) for lv in plan))
        self.levels = []
        for i, lv in enumerate(plan):
            child = outs[(i - 1) % 2] if i else None
            self.levels.append((lv, _LevelBuffers(lv, rows, outs[i % 2], child, mm)))
        # Grid of the solution plus a zero slot (read by padded ring entries) and a trash slot
        # (written by padded pivots); boundary nodes are never written, so they stay 0.
        self.grid = np.zeros(n * n + 2)

    def solve(self, coef_vals: list[np.ndarray]) -> np.ndarray:
        """Solve one sample; ``coef_vals[i]``: its table entries at level i's ``coef_src``.

        Returns the flat solution grid (N * N + 2,), valid until the next call.
        """
        for (lv, lb), vals in zip(self.levels, coef_vals, strict=True):
            _eliminate(lv, lb, vals)
        for lv, lb in reversed(self.levels):
            _substitute(lv, lb, self.grid)
        return self.grid


def _solve_dissection(a: np.ndarray, f: float | np.ndarray,
                      progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Solve a batch ``a`` (n, N, N) by nested dissection; returns u (n, N, N), zero boundary.

    ``f`` as in :func:`solve_darcy` (scalar, (N, N) or (n, N, N)). ``progress(1)`` after each
    sample. Samples are independent, so the result does not depend on how they are grouped.
    """
    n_s, n, _ = a.shape
    plan = _plan(n - 2)
    ws = _Workspace(plan, n)
    u = np.zeros_like(a)
    f_arr = np.asarray(f, dtype=np.float64)
    chunk = 32  # table rows are built for a few samples at once, outside the per-sample loop
    for start in range(0, n_s, chunk):
        stop = min(start + chunk, n_s)
        f_chunk = f_arr[start:stop] if f_arr.ndim == 3 else f_arr
        table = _coefficient_table(a[start:stop], f_chunk)
        vals = [table[:, lv.coef_src] for lv in plan]
        for j in range(stop - start):
            grid = ws.solve([v[j] for v in vals])
            u[start + j] = grid[: n * n].reshape(n, n)
            if progress is not None:
                progress(1)
    return u


def generate_darcy(
    n_samples: int,
    resolution: int,
    seed: int,
    alpha: float = 2.0,
    tau: float = 3.0,
    high: float = 12.0,
    low: float = 3.0,
    forcing: float = 1.0,
    progress: Callable[[int], None] | None = None,
    method: str = "dissection",
) -> tuple[np.ndarray, np.ndarray]:
    """Generate FNO-style Darcy pairs ``(a, u)``, each (n_samples, N, N) float64.

    ``a = darcy_coefficient(GRF(alpha, tau), high, low)`` drawn from
    ``np.random.default_rng(seed)``; ``u`` solves ``-div(a grad u) = forcing`` with zero
    boundary. ``progress(1)`` is called after each solved sample. Deterministic per seed.

    ``method``: ``"dissection"`` (default) solves with the batched nested-dissection direct
    solver (one elimination plan per resolution, reused by every sample); ``"spsolve"`` calls
    :func:`solve_darcy` (``scipy.sparse.linalg.spsolve``) per sample, the reference. Both are
    exact direct solves; they agree to round-off (max-norm relative difference ~1e-13).
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise ValueError(f"resolution must be an int, got {type(resolution).__name__}")
    if resolution < 3:
        raise ValueError(f"resolution must be >= 3 (one interior node), got {resolution}")
    if not np.isfinite(forcing):
        raise ValueError(f"forcing must be finite, got {forcing}")
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable or None, got {type(progress).__name__}")
    if method not in ("dissection", "spsolve"):
        raise ValueError(f"method must be 'dissection' or 'spsolve', got {method!r}")
    rng = np.random.default_rng(seed)
    field = gaussian_random_field(rng, n_samples, resolution, alpha=alpha, tau=tau)
    a = darcy_coefficient(field, high=high, low=low)
    if method == "dissection":
        return a, _solve_dissection(a, forcing, progress)
    u = np.empty_like(a)
    for k in range(n_samples):
        u[k] = solve_darcy(a[k], forcing)
        if progress is not None:
            progress(1)
    return a, u
