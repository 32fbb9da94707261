"""Import external datasets into the bench's HDF5 layout (``pdes.dataset``).

Two sources:

* PDEBench HDF5 files: ``tensor`` holds the solution; 1D time-dependent files (Burgers) have
  ``tensor`` (n, n_t, X) with ``x-coordinate`` and ``t-coordinate``; Darcy files have ``tensor``
  (n, 1, X, Y) (the solution) and ``nu`` (n, X, Y) (the coefficient) with ``x-coordinate`` and
  ``y-coordinate``.
* PyTorch files holding a dict of arrays, ``x``/``y`` or ``input``/``output`` (n, *spatial) or
  (n, c, *spatial), read with ``torch.load(weights_only=True)`` so the file cannot run code.

A file that is not what it claims raises ValueError saying what was expected and what was found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pdes.dataset import Dataset, make_dataset
from pdes.registry import get_spec, resolve_params

TENSOR_KEYS = (("x", "y"), ("input", "output"))


def _grid(pde: str, spatial: tuple[int, ...], coords: list[np.ndarray] | None = None) -> np.ndarray:
    """Coordinates (d, *spatial): the file's when given, else the PDE's own convention."""
    spec = get_spec(pde)
    if coords is None:
        coords = [np.arange(n) / n if spec.periodic else np.linspace(0.0, 1.0, n)
                  for n in spatial]
    if tuple(len(c) for c in coords) != spatial:
        raise ValueError(f"coordinates of lengths {[len(c) for c in coords]} do not match the "
                         f"data's spatial shape {spatial}")
    return np.stack(np.meshgrid(*coords, indexing="ij")).astype(np.float64)


def _with_channels(name: str, arr: np.ndarray, dim: int) -> np.ndarray:
    """(n, *spatial) -> (n, 1, *spatial); (n, c, *spatial) kept; anything else is an error."""
    if arr.ndim == dim + 1:
        return arr[:, None]
    if arr.ndim == dim + 2:
        return arr
    raise ValueError(f"{name} has shape {arr.shape}: expected (n, *spatial) or (n, c, *spatial) "
                     f"with {dim} spatial dims")


def _config(pde: str, source: Path, n: int, spatial: tuple[int, ...],
            params: dict[str, float] | None) -> dict[str, Any]:
    if len(set(spatial)) != 1:
        raise ValueError(f"only square grids are supported, got spatial shape {spatial}")
    return {"pde": pde, "split": "imported", "n_samples": n, "resolution": spatial[0],
            "seed": 0, "source": source.name, **resolve_params(pde, params)}


def import_pdebench(src: Path, pde: str | None = None,
                    params: dict[str, float] | None = None) -> Dataset:
    """Read a PDEBench HDF5 file (Darcy or a 1D time-dependent PDE such as Burgers)."""
    try:
        h5 = h5py.File(src, "r")
    except OSError as e:
        raise ValueError(f"{src}: not a readable HDF5 file ({e})") from e
    with h5:
        if "tensor" not in h5:
            raise ValueError(f"{src}: no 'tensor' dataset, so not a PDEBench file "
                             f"(keys: {sorted(h5.keys())})")
        tensor = np.asarray(h5["tensor"][()], dtype=np.float64)
        inferred = "darcy" if "nu" in h5 else ("burgers" if tensor.ndim == 3 else None)
        pde = pde or inferred
        if pde is None or pde != inferred:
            raise ValueError(f"{src}: 'tensor' {tensor.shape} with keys {sorted(h5.keys())} "
                             f"looks like {inferred or 'no supported PDE'}, not {pde}")
        if pde == "darcy":
            a = np.asarray(h5["nu"][()], dtype=np.float64)
            coords = [h5[k][()] for k in ("x-coordinate", "y-coordinate") if k in h5] or None
            if tensor.ndim != 4 or tensor.shape[1] != 1 or a.shape != tensor[:, 0].shape:
                raise ValueError(f"{src}: Darcy needs 'tensor' (n, 1, X, Y) and 'nu' (n, X, Y), "
                                 f"got {tensor.shape} and {a.shape}")
            inputs, targets, traj, times = a[:, None], tensor, None, None
        else:
            coords = [h5["x-coordinate"][()]] if "x-coordinate" in h5 else None
            t = np.asarray(h5["t-coordinate"][()], dtype=np.float64) if "t-coordinate" in h5 \
                else np.arange(tensor.shape[1], dtype=np.float64)
            inputs, targets = tensor[:, :1], tensor[:, -1:]
            traj, times = tensor[:, :, None], t[:tensor.shape[1]]
    spatial = targets.shape[2:]
    return make_dataset(pde, "imported", 0, inputs, targets, _grid(pde, spatial, coords),
                        _config(pde, src, len(inputs), spatial, params), trajectory=traj,
                        times=times)


def import_tensor_dict(src: Path, pde: str, params: dict[str, float] | None = None) -> Dataset:
    """Read a ``torch.save``d dict of input/output arrays (weights_only: no code runs)."""
    import pickle

    import torch

    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ValueError(f"{src}: not a PyTorch file of plain tensors ({e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{src}: expected a dict of arrays, got {type(obj).__name__}")
    keys = next((k for k in TENSOR_KEYS if set(k) <= set(obj)), None)
    if keys is None:
        raise ValueError(f"{src}: expected keys {' or '.join('/'.join(k) for k in TENSOR_KEYS)}, "
                         f"found {sorted(obj)}")
    dim = get_spec(pde).dim
    x, y = (_with_channels(k, np.asarray(torch.as_tensor(obj[k]), dtype=np.float64), dim)
            for k in keys)
    if x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
        raise ValueError(f"{src}: {keys[0]} {x.shape} and {keys[1]} {y.shape} disagree on the "
                         "sample count or grid")
    spatial = y.shape[2:]
    return make_dataset(pde, "imported", 0, x, y, _grid(pde, spatial),
                        _config(pde, src, len(x), spatial, params))


def import_file(src: Path, pde: str | None = None,
                params: dict[str, float] | None = None) -> Dataset:
    """Dispatch on the file's content: HDF5 (PDEBench) or a PyTorch tensor dict."""
    src = Path(src)
    if not src.is_file():
        raise ValueError(f"{src}: no such file")
    if h5py.is_hdf5(src):
        return import_pdebench(src, pde, params)
    if pde is None:
        raise ValueError(f"{src}: a tensor-dict file does not say which PDE it holds: pass --pde")
    return import_tensor_dict(src, pde, params)
