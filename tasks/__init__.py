"""Thin Prefect tasks: I/O, logging and retries around the pure packages ``pdes`` and ``model``."""
