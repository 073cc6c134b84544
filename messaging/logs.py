"""Logging set-up for a service's __main__: one line per record on stdout, pika kept quiet."""
from __future__ import annotations

import logging
import os
import sys

from messaging.settings import env_choice


def configure() -> None:
    """Log at LOG_LEVEL (default INFO) to stdout; raises ConfigError for an unknown level.

    pika's own connection-failure records are silenced: our reconnect loops log each failure once,
    with the delay before the next attempt.
    """
    level = env_choice(os.environ, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
    logging.basicConfig(level=level, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.DEBUG if level == "DEBUG" else logging.CRITICAL)
