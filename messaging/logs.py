"""Logging set-up for a service's __main__: one line per record on stdout, pika kept quiet."""
from __future__ import annotations

import logging
import os
import sys


def configure() -> None:
    """Log at LOG_LEVEL (default INFO) to stdout; pika only from WARNING up."""
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(), stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
