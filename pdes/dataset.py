"""Versioned, self-verifying HDF5 storage for PDE datasets.

HDF5 layout (``format_version`` 1)::

    /inputs        float64 (n, c_in, *spatial)   model inputs (Darcy: c_in = 1, the coefficient a)
    /targets       float64 (n, c_out, *spatial)  solutions (Darcy: c_out = 1, the pressure u)
    /grid          float64 (d, *spatial)         node coordinates; Darcy: (2, N, N),
                                                 grid[0] = x, grid[1] = y, indexing "ij"
    /parameters/   group (optional, may be empty) of per-sample 1-D arrays, each of length n
    /trajectory    float64 (n, n_t, c, *spatial) optional: frames of time-dependent PDEs
    /times         float64 (n_t,)                optional: the frames' times (with trajectory)
    attributes on the root:
        pde             str   PDE name, e.g. "darcy"
        split           str   e.g. "train", "test"
        seed            int   seed the data were generated from
        format_version  int   1
        config          str   JSON of the generating config dict
        config_hash     str   sha256 hex of the canonical config JSON
                              (json.dumps(config, sort_keys=True, separators=(",", ":")))
        content_hash    str   sha256 hex over inputs, targets and grid (see content_hash)

The content hash covers the three arrays, and trajectory and times when present (not
``parameters`` nor the attributes), so it identifies the numerical data independently of where
and how it was stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "Dataset",
    "cached_dataset",
    "config_hash",
    "content_hash",
    "darcy_grid",
    "load_dataset",
    "make_dataset",
    "save_dataset",
]

FORMAT_VERSION = 1
_ARRAYS = ("inputs", "targets", "grid")
_ATTRS = ("pde", "split", "seed", "format_version", "config", "config_hash", "content_hash")


def _canonical_json(config: dict[str, Any]) -> str:
    """Canonical JSON text of a config: sorted keys, compact separators."""
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict, got {type(config).__name__}")
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"config is not JSON-serialisable: {err}") from err


def config_hash(config: dict[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of ``config``.

    Note 1 and 1.0 serialise differently and so hash differently; tuples hash like lists.
    """
    return hashlib.sha256(_canonical_json(config).encode("utf-8")).hexdigest()


def content_hash(inputs: np.ndarray, targets: np.ndarray, grid: np.ndarray,
                 trajectory: np.ndarray | None = None, times: np.ndarray | None = None) -> str:
    """sha256 hex digest over the data arrays.

    For each of inputs, targets, grid in that order the digest is fed the ASCII header
    ``"<name>[<dim0>,<dim1>,...];"`` followed by the array's bytes as little-endian float64
    in C order, so a change of value, shape or order changes the hash. ``trajectory`` and
    ``times``, when given, follow in the same way (files without them hash as before).
    """
    digest = hashlib.sha256()
    named = list(zip(_ARRAYS, (inputs, targets, grid), strict=True))
    if trajectory is not None:
        named += [("trajectory", trajectory), ("times", times)]
    for name, arr in named:
        data = np.ascontiguousarray(arr, dtype="<f8")
        digest.update(f"{name}[{','.join(str(s) for s in data.shape)}];".encode("ascii"))
        digest.update(data.tobytes(order="C"))
    return digest.hexdigest()


def darcy_grid(resolution: int) -> np.ndarray:
    """Node coordinates of the Darcy grid, shape (2, N, N), float64, unit-square lengths.

    ``grid[0][i, j] = x_i = i/(N-1)`` and ``grid[1][i, j] = y_j = j/(N-1)``, matching the
    ``[i, j]`` (first axis x) indexing of :mod:`pdes.darcy`.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise ValueError(f"resolution must be an int, got {type(resolution).__name__}")
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    x = np.linspace(0.0, 1.0, resolution)
    return np.stack(np.meshgrid(x, x, indexing="ij")).astype(np.float64)


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a PDE dataset; see the module docstring for array shapes.

    ``eq=False`` because fields hold numpy arrays (element-wise ``==`` has no truth value);
    compare ``content_hash`` instead. Construction validates shapes and dtypes.
    """

    pde: str
    split: str
    seed: int
    inputs: np.ndarray
    targets: np.ndarray
    grid: np.ndarray
    parameters: dict[str, np.ndarray]
    config: dict[str, Any]
    config_hash: str
    content_hash: str
    trajectory: np.ndarray | None = None
    times: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check_shapes(self.inputs, self.targets, self.grid, self.parameters)
        if self.trajectory is not None:
            t = self.trajectory
            want = (self.inputs.shape[0], None, *self.targets.shape[1:])
            if (t.ndim != len(want) or t.shape[0] != want[0] or t.shape[2:] != want[2:]
                    or self.times is None or self.times.shape != (t.shape[1],)):
                raise ValueError(f"trajectory must have shape (n, n_t, c, *spatial) = "
                                 f"({want[0]}, n_t, {', '.join(map(str, want[2:]))}) with "
                                 f"times (n_t,), got {t.shape} and "
                                 f"{None if self.times is None else self.times.shape}")

    @property
    def n_samples(self) -> int:
        """Number of samples n (first axis of inputs and targets)."""
        return int(self.inputs.shape[0])

    @property
    def resolution(self) -> tuple[int, ...]:
        """Spatial sizes, e.g. (N, N) for Darcy."""
        return tuple(int(s) for s in self.grid.shape[1:])


def _check_shapes(
    inputs: np.ndarray, targets: np.ndarray, grid: np.ndarray, parameters: dict[str, np.ndarray]
) -> None:
    """Raise ValueError unless the arrays follow the layout in the module docstring."""
    for name, arr in zip(_ARRAYS, (inputs, targets, grid), strict=True):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float64:
            raise ValueError(
                f"{name} must be a float64 numpy array, got {getattr(arr, 'dtype', type(arr))}"
            )
    if grid.ndim < 2 or grid.shape[0] != grid.ndim - 1:
        raise ValueError(
            f"grid must have shape (d, *spatial) with d spatial dims, got {grid.shape}"
        )
    spatial = grid.shape[1:]
    for name, arr in (("inputs", inputs), ("targets", targets)):
        if arr.ndim != 2 + len(spatial) or arr.shape[2:] != spatial:
            raise ValueError(
                f"{name} must have shape (n, c, *{spatial}) to match grid {grid.shape}, "
                f"got {arr.shape}"
            )
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"inputs and targets disagree on the sample count: {inputs.shape} vs {targets.shape}"
        )
    for key, values in parameters.items():
        if np.ndim(values) != 1 or len(values) != inputs.shape[0]:
            raise ValueError(
                f"parameter {key!r} must be 1-D with {inputs.shape[0]} entries, "
                f"got shape {np.shape(values)}"
            )


def make_dataset(
    pde: str,
    split: str,
    seed: int,
    inputs: np.ndarray,
    targets: np.ndarray,
    grid: np.ndarray,
    config: dict[str, Any],
    parameters: dict[str, np.ndarray] | None = None,
    trajectory: np.ndarray | None = None,
    times: np.ndarray | None = None,
) -> Dataset:
    """Build a :class:`Dataset`, converting arrays to float64 and computing both hashes."""
    arrays = [np.ascontiguousarray(x, dtype=np.float64) for x in (inputs, targets, grid)]
    extra = [None if x is None else np.ascontiguousarray(x, dtype=np.float64)
             for x in (trajectory, times)]
    params = {str(k): np.asarray(v) for k, v in (parameters or {}).items()}
    return Dataset(
        pde=str(pde),
        split=str(split),
        seed=int(seed),
        inputs=arrays[0],
        targets=arrays[1],
        grid=arrays[2],
        parameters=params,
        config=json.loads(_canonical_json(config)),  # the form it will have after a reload
        config_hash=config_hash(config),
        content_hash=content_hash(*arrays, *extra),
        trajectory=extra[0],
        times=extra[1],
    )


def save_dataset(path: Path, ds: Dataset) -> None:
    """Write ``ds`` to ``path`` atomically (temp file in the same folder, then os.replace).

    Parent folders are created. A crash mid-write leaves any previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp_name, "w") as h5:
            for name in _ARRAYS:
                h5.create_dataset(name, data=getattr(ds, name))
            if ds.trajectory is not None:
                h5.create_dataset("trajectory", data=ds.trajectory)
                h5.create_dataset("times", data=ds.times)
            group = h5.create_group("parameters")
            for key, values in ds.parameters.items():
                group.create_dataset(key, data=values)
            h5.attrs["pde"] = ds.pde
            h5.attrs["split"] = ds.split
            h5.attrs["seed"] = int(ds.seed)
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["config"] = _canonical_json(ds.config)
            h5.attrs["config_hash"] = ds.config_hash
            h5.attrs["content_hash"] = ds.content_hash
        # Same-folder rename is atomic on POSIX and Windows, so readers never see half a file.
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _as_str(value: Any) -> str:
    """h5py may hand back str or bytes for string attributes depending on how they were made."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_file(path: Path) -> dict[str, Any]:
    """Read raw arrays and attributes; ValueError naming the first missing key/attribute."""
    try:
        h5 = h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from err
    with h5:
        for name in _ARRAYS:
            if name not in h5 or not isinstance(h5[name], h5py.Dataset):
                raise ValueError(f"{path}: missing dataset {name!r} (found {sorted(h5.keys())})")
        missing = [key for key in _ATTRS if key not in h5.attrs]
        if missing:
            raise ValueError(f"{path}: missing root attribute(s) {missing}")
        raw: dict[str, Any] = {name: h5[name][()] for name in _ARRAYS}
        for name in ("trajectory", "times"):
            raw[name] = np.asarray(h5[name][()], dtype=np.float64) if name in h5 else None
        group = h5.get("parameters")
        raw["parameters"] = {k: group[k][()] for k in group} if group is not None else {}
        raw.update({key: h5.attrs[key] for key in _ATTRS})
    return raw


def load_dataset(path: Path, verify: bool = True) -> Dataset:
    """Load a dataset written by :func:`save_dataset`.

    Raises ValueError if the file is not HDF5, a dataset or attribute is missing, the format
    version is unknown, shapes disagree, or (with ``verify``) the stored hashes do not match
    the data. FileNotFoundError if ``path`` does not exist.
    """
    path = Path(path)
    raw = _read_file(path)
    version = int(raw["format_version"])
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {version} not supported ({FORMAT_VERSION})")
    try:
        config = json.loads(_as_str(raw["config"]))
        ds = Dataset(
            pde=_as_str(raw["pde"]),
            split=_as_str(raw["split"]),
            seed=int(raw["seed"]),
            inputs=np.asarray(raw["inputs"], dtype=np.float64),
            targets=np.asarray(raw["targets"], dtype=np.float64),
            grid=np.asarray(raw["grid"], dtype=np.float64),
            parameters=raw["parameters"],
            config=config,
            config_hash=_as_str(raw["config_hash"]),
            content_hash=_as_str(raw["content_hash"]),
            trajectory=raw["trajectory"],
            times=raw["times"],
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from err
    if verify:
        actual = content_hash(ds.inputs, ds.targets, ds.grid, ds.trajectory, ds.times)
        if actual != ds.content_hash:
            raise ValueError(
                f"{path}: content hash mismatch: file says {ds.content_hash}, data gives {actual}"
            )
        actual_cfg = config_hash(ds.config)
        if actual_cfg != ds.config_hash:
            raise ValueError(
                f"{path}: config hash mismatch: file says {ds.config_hash}, "
                f"config gives {actual_cfg}"
            )
    return ds


def cached_dataset(
    path: Path, config: dict[str, Any], build: Callable[[], Dataset]
) -> tuple[Dataset, bool]:
    """Return ``(dataset, hit)``: the verified file at ``path`` if it was built from ``config``.

    A missing, unreadable, corrupt (hash mismatch) or stale (different config hash) file is
    rebuilt with ``build()``, saved atomically over ``path`` and returned with ``hit=False``;
    it is never silently used. ValueError if ``build()`` returns a dataset whose config hash
    differs from ``config``'s (it would never hit the cache).
    """
    path = Path(path)
    wanted = config_hash(config)
    if path.exists():
        cached: Dataset | None
        try:
            cached = load_dataset(path, verify=True)
        except (OSError, ValueError, KeyError):
            cached = None  # corrupt or unreadable: fall through to a rebuild
        if cached is not None and cached.config_hash == wanted:
            return cached, True
    built = build()
    if not isinstance(built, Dataset):
        raise ValueError(f"build() must return a Dataset, got {type(built).__name__}")
    if built.config_hash != wanted:
        raise ValueError(
            f"build() returned a dataset with config_hash {built.config_hash}, "
            f"expected {wanted} for the requested config"
        )
    save_dataset(path, built)
    return built, False
