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

from bench import cli, sidebyside, table
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
        runs = results.get("configs") or {"": results}  # several configurations: a PNG each
        for config, run in runs.items():
            suffix = f"-{config}" if config else ""
            run = {"started_at": results["started_at"], **run,
                   "machine": {**results.get("machine", {}), **run.get("machine", {})}}
            for name in (f"{stem}{suffix}.png", f"latest{suffix}.png"):
                written.append(draw(run, output / name))
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
    if len(options.configs) > 1:
        return _several(options, results)
    # one configuration: the default (SQLite, or whatever TEST_BACKEND names) keeps its layout
    config = None if options.configs == ("sqlite",) else options.configs[0]
    code, started = _one(options, Environment(options.workers, options.threads, config), results)
    results["machine"] = {**results.get("machine", {}), "load_average_end": os.getloadavg()}
    results["total_s"] = round(time.monotonic() - started, 1)
    results["headline"] = headline(results)
    paths = write(results, options.output)
    print(table.render(results))
    print(f"\nTotal {results['total_s']} s. Results: " + ", ".join(str(p) for p in paths))
    _report_lost(results, code)
    return code


def _one(options: cli.Options, env: Environment, results: dict[str, Any]) -> tuple[int, float]:
    """Start `env`, run the benchmark (or the soak) in it, tear it down; (exit code, start)."""
    code, started = 2, time.monotonic()
    try:
        env.start(baselines=not options.soak)
        results["machine"] = _machine(env)
        if env.config is not None:
            results["setup"] = env.describe()
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
    return code, started


def _several(options: cli.Options, results: dict[str, Any]) -> int:
    """Each configuration in turn, each with its own environment and baselines; then the
    side-by-side comparison. An interruption stops the remaining configurations."""
    started, codes = time.monotonic(), []
    results["configs"] = {}
    results["machine"] = {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()}
    for name in options.configs:
        print(f"===== configuration {name}", file=sys.stderr, flush=True)
        run: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        results["configs"][name] = run
        code, run_started = _one(options, Environment(options.workers, options.threads, name), run)
        run["machine"] = {**run.get("machine", {}), "load_average_end": os.getloadavg()}
        run["total_s"] = round(time.monotonic() - run_started, 1)
        run["headline"] = headline(run)
        codes.append(code)
        if code == 130:
            results["error"] = f"interrupted during {name}"
            break
    results["machine"]["load_average_end"] = os.getloadavg()
    results["total_s"] = round(time.monotonic() - started, 1)
    results["side_by_side"] = sidebyside.compare(results["configs"])
    paths = write(results, options.output)
    print(table.render_configs(results))
    print(f"\nTotal {results['total_s']} s. Results: " + ", ".join(str(p) for p in paths))
    for name, run in results["configs"].items():
        _report_lost(run, codes[list(results["configs"]).index(name)], name)
    return 130 if 130 in codes else 2 if 2 in codes else max(codes, default=2)


def _report_lost(results: dict[str, Any], code: int, name: str = "") -> None:
    if code == 1:
        print(f"FAILED{' (' + name + ')' if name else ''}: {results['verify']['lost']} lost and "
              f"{results['verify']['not_final']} not final of {results['verify']['accepted']} "
              f"accepted orders", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
