"""Great Expectations suites as JSON, one per PDE's per-sample feature table."""

from __future__ import annotations

import json
from importlib.resources import files


def load_suite(name: str) -> dict:
    """The suite ``expectations/<name>.json`` as a dict (``{"name", "expectations": [...]}``)."""
    resource = files(__name__) / f"{name}.json"
    if not resource.is_file():
        available = sorted(p.name.removesuffix(".json") for p in files(__name__).iterdir()
                           if p.name.endswith(".json"))
        raise ValueError(f"no expectation suite {name!r}; available: {available}")
    return json.loads(resource.read_text())
