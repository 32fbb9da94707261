"""Thin Prefect tasks: I/O, logging and retries around the pure packages ``pdes`` and ``model``."""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.exceptions import MissingContextError


def task_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run; a plain logger when a task's ``.fn`` is called
    directly (tests, notebooks)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("pno")
