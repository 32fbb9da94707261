"""Data stage: generate (or reuse) each split as an HDF5 file."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import task
from tqdm import tqdm

from pdes.dataset import Dataset, cached_dataset
from pdes.registry import build_split
from pno.config import DataConfig
from tasks import task_logger


def split_path(data_dir: Path, gen: dict) -> Path:
    """File of a split: the name carries the split, the resolution and the seed."""
    return data_dir / f"{gen['pde']}_{gen['split']}_n{gen['n_samples']}_r{gen['resolution']}" \
                      f"_s{gen['seed']}.h5"


def build_with_progress(gen: dict) -> Dataset:
    """Generate the split ``gen`` describes, with a progress bar on a terminal."""
    with tqdm(total=gen["n_samples"], desc=f"{gen['pde']} {gen['split']}", unit="sample",
              disable=None, leave=False) as bar:
        return build_split(gen, progress=bar.update)


@task(name="generate-split", task_run_name="generate-{split}")
def generate_split(cfg: DataConfig, split: str, data_dir: Path) -> dict:
    """Generate one split, or reuse the cached file when its config hash and content verify."""
    logger = task_logger()
    gen = cfg.generating_config(split)
    path = split_path(data_dir, gen)
    t0 = time.perf_counter()
    ds, hit = cached_dataset(path, gen, lambda: build_with_progress(gen))
    seconds = time.perf_counter() - t0
    logger.info("%s: %d samples %s in %.1f s (content %s)", split, ds.n_samples,
                "reused from cache" if hit else "generated", seconds, ds.content_hash[:12])
    return {"split": split, "path": str(path), "n_samples": ds.n_samples, "cache_hit": hit,
            "content_hash": ds.content_hash, "config_hash": ds.config_hash, "seconds": seconds}
