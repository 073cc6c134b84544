"""`python -m bench`: start everything, measure, tear everything down, write and show the results."""
from __future__ import annotations

import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pika
import requests

from bench import cli, table
from bench.cli import RESULTS
from bench.environment import Environment
from bench.headline import headline
from bench.runner import Run
from bench.soak import SoakRun

logger = logging.getLogger("bench")
ROOT = RESULTS.parent.parent
TUNABLES = ("PREFETCH_COUNT", "BATCH_SIZE", "SQLITE_SYNCHRONOUS", "SQLITE_BUSY_TIMEOUT_MS",
            "TRANSIENT_RETRY_LIMIT", "TRANSIENT_RETRY_DELAY", "REDELIVERY_LIMIT",
            "RABBITMQ_HEARTBEAT", "GRACEFUL_TIMEOUT")


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _machine(env: Environment) -> dict[str, Any]:
    try:
        overview = requests.get(f"{env.broker.api}/overview", timeout=5,
                                auth=(env.broker.user, env.broker.password)).json()
    except (requests.RequestException, ValueError):
        overview = {}
    return {"cpus": os.cpu_count(), "load_average_start": os.getloadavg(),
            "python": platform.python_version(), "pika": pika.__version__,
            "rabbitmq": overview.get("rabbitmq_version"), "erlang": overview.get("erlang_version"),
            "service_env": env.env,
            "inherited_env": {name: os.environ[name] for name in TUNABLES if name in os.environ}}


def _code() -> dict[str, Any]:
    """The commit measured, and the files that differed from it (the benchmark's own aside)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.rstrip("\n")
    try:
        changed = [line[3:] for line in git("status", "--porcelain").splitlines()
                   if not line[3:].startswith(("bench/", "tests/bench/"))]
        return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": changed}
    except (OSError, subprocess.SubprocessError):
        return {}


def write(results: dict[str, Any], output: Path) -> list[Path]:
    """Write <timestamp>.json, latest.json and, with matplotlib, the PNG; return the paths."""
    output.mkdir(parents=True, exist_ok=True)
    stem = results["started_at"].replace(":", "").replace("-", "")
    written = []
    for name in (f"{stem}.json", "latest.json"):
        (output / name).write_text(json.dumps(results, indent=1, default=str))
        written.append(output / name)
    try:
        from bench.plot import draw
        for name in (f"{stem}.png", "latest.png"):
            written.append(draw(results, output / name))
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -r bench/requirements.txt)",
              file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    options = cli.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("pika").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)
    results: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "command": " ".join(["python -m bench", *(argv or sys.argv[1:])]),
                               "options": options.record(), "code": _code()}
    env = Environment(options.workers, options.threads)
    code, started = 2, time.monotonic()
    try:
        env.start(baselines=not options.soak)
        results["machine"] = _machine(env)
        if options.soak:
            SoakRun(options, env, results).soak()
        else:
            Run(options, env, results).full()
        verify = results["verify"]
        code = 0 if verify["lost"] == 0 and verify["not_final"] == 0 else 1
    except KeyboardInterrupt:
        results["error"], code = "interrupted", 130
        print("interrupted: tearing down", file=sys.stderr)
    except Exception as exc:
        results["error"], code = f"{exc.__class__.__name__}: {exc}", 2
        traceback.print_exc()
    finally:
        env.close(keep_workdir=code != 0)
    results["machine"] = {**results.get("machine", {}), "load_average_end": os.getloadavg()}
    results["total_s"] = round(time.monotonic() - started, 1)
    results["headline"] = headline(results)
    paths = write(results, options.output)
    print(table.render(results))
    print(f"\nTotal {results['total_s']} s. Results: " + ", ".join(str(p) for p in paths))
    if code == 1:
        print(f"FAILED: {results['verify']['lost']} lost and {results['verify']['not_final']} "
              f"not final of {results['verify']['accepted']} accepted orders", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
