"""PDE data for the PNO physics bench: random fields, a Darcy solver, HDF5 storage, features.

Pure numpy/scipy/h5py; no orchestration, tracking or deep-learning imports, so the package
can be used (and tested) on its own.
"""

from pdes.darcy import (
    TORSION_MAX,
    assemble_darcy,
    darcy_coefficient,
    darcy_residual,
    generate_darcy,
    solve_darcy,
)
from pdes.dataset import (
    FORMAT_VERSION,
    Dataset,
    cached_dataset,
    config_hash,
    content_hash,
    darcy_grid,
    load_dataset,
    make_dataset,
    save_dataset,
)
from pdes.features import FEATURE_COLUMNS, darcy_features
from pdes.grf import gaussian_random_field, grf_sqrt_eigenvalues

__all__ = [
    "FEATURE_COLUMNS",
    "FORMAT_VERSION",
    "TORSION_MAX",
    "Dataset",
    "assemble_darcy",
    "cached_dataset",
    "config_hash",
    "content_hash",
    "darcy_coefficient",
    "darcy_features",
    "darcy_grid",
    "darcy_residual",
    "gaussian_random_field",
    "generate_darcy",
    "grf_sqrt_eigenvalues",
    "load_dataset",
    "make_dataset",
    "save_dataset",
    "solve_darcy",
]
