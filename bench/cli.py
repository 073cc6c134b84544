"""Command-line options of `python -m bench`, with the full and --quick profiles."""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.environment import CONFIGS
from bench.schedule import parse_rates
from order_service.config import DEFAULTS

RESULTS = Path(__file__).resolve().parent / "results"
FULL = {"duration": 10.0, "rates": "100,200,400,800,1200,1600,2400,3200,4800,6400",
        "drain_orders": 5000, "raw_messages": 20000, "lowrate_rates": "5,20,100",
        "lowrate_duration": 10.0}
QUICK = {"duration": 3.0, "rates": "200,800,1600", "drain_orders": 1000, "raw_messages": 5000,
         "lowrate_rates": "5,20,100", "lowrate_duration": 3.0}
ONLY = ("lowrate",)


@dataclass(frozen=True)
class Options:
    """One run's settings, as recorded in its results file."""

    quick: bool
    duration: float
    rates: list[int]
    drain_orders: int
    concurrency: int
    connections: int
    workers: int
    threads: int
    raw_messages: int
    soak: int
    soak_rate: float | None
    settle_timeout: float
    output: Path
    configs: tuple[str, ...] = ("sqlite",)
    lowrate_rates: tuple[int, ...] = (5, 20, 100)
    lowrate_duration: float = 10.0
    only: str | None = None

    def record(self) -> dict:
        return {**asdict(self), "output": str(self.output), "configs": list(self.configs),
                "lowrate_rates": list(self.lowrate_rates)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark OrderService, InventoryService and NotificationService on the local "
                    "RabbitMQ against a bare gunicorn endpoint and raw pika, in one run.")
    p.add_argument("--quick", action="store_true",
                   help="a short smoke run (about a minute): 3 s steps, 3 rates, 1000 drain orders")
    p.add_argument("--duration", type=float, help="seconds per load step (default 10, quick 3)")
    p.add_argument("--rates", help=f"offered rates of the open-loop sweep, stopping at saturation "
                                   f"(default {FULL['rates']}; quick {QUICK['rates']})")
    p.add_argument("--lowrate-rates",
                   help=f"fixed low rates at which CPU per order is measured "
                        f"(default {FULL['lowrate_rates']})")
    p.add_argument("--lowrate-duration", type=float,
                   help="seconds per low rate (default 10, quick 3; with --duration: that)")
    p.add_argument("--only", choices=ONLY,
                   help="lowrate: only the low rates, with the closed loop as the saturated "
                        "figure and the final checks")
    p.add_argument("--drain-orders", type=int, help="orders queued for the drain test (default 5000)")
    p.add_argument("--concurrency", type=int, default=16,
                   help="clients of the closed-loop runs and of the drain posting (default 16)")
    p.add_argument("--connections", type=int, default=64,
                   help="keep-alive connections of the open-loop generator (default 64)")
    p.add_argument("--workers", type=int,
                   default=int(os.environ.get("WEB_CONCURRENCY", DEFAULTS.workers)),
                   help=f"gunicorn workers of OrderService and of the bare endpoint "
                        f"(default {DEFAULTS.workers})")
    p.add_argument("--threads", type=int, default=int(os.environ.get("WEB_THREADS", DEFAULTS.threads)),
                   help=f"gunicorn threads per worker of both (default {DEFAULTS.threads})")
    p.add_argument("--raw-messages", type=int, help="messages of the raw pika baseline (default 20000)")
    p.add_argument("--soak", type=int, default=0, metavar="N",
                   help="instead of the benchmark, post N orders at --soak-rate and report RSS")
    p.add_argument("--soak-rate", type=float,
                   help="orders/s of the soak (default: 60%% of a 5 s closed-loop maximum)")
    p.add_argument("--settle-timeout", type=float, default=180.0,
                   help="seconds to wait for every order to become final after a step (default 180)")
    p.add_argument("--output", type=Path, default=RESULTS, help="results directory (bench/results)")
    p.add_argument("--configs", default="sqlite",
                   help=f"comma-separated configurations to measure one after another in this run, "
                        f"each with its own baselines, compared side by side: "
                        f"{', '.join(CONFIGS)} (default sqlite)")
    return p


def parse_configs(text: str) -> tuple[str, ...]:
    """`sqlite,postgres` -> ("sqlite", "postgres"), in the order given, each once."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONFIGS]
    if not names or unknown:
        raise ValueError(f"--configs takes a comma-separated list of {', '.join(CONFIGS)}; "
                         f"got {text!r}")
    return tuple(dict.fromkeys(names))


def parse(argv: list[str] | None = None) -> Options:
    """Parse the command line into Options, filling unset values from the chosen profile."""
    p = parser()
    args = p.parse_args(argv)
    profile = QUICK if args.quick else FULL

    def pick(name: str):
        value = getattr(args, name)
        return profile[name] if value is None else value

    try:
        rates = parse_rates(pick("rates"))
        lowrate_rates = parse_rates(pick("lowrate_rates"))
        configs = parse_configs(args.configs)
    except ValueError as exc:
        p.error(str(exc))
    lowrate_duration = (args.lowrate_duration if args.lowrate_duration is not None
                        else args.duration if args.duration is not None else profile["lowrate_duration"])
    if lowrate_duration <= 0:
        p.error("--lowrate-duration must be positive")
    if args.soak and args.only:
        p.error("--soak and --only are two different runs: give one")
    if args.soak and configs != ("sqlite",):
        p.error("--soak measures one configuration: leave out --configs")
    for name in ("concurrency", "connections", "workers", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if pick("duration") <= 0 or pick("drain_orders") < 1 or pick("raw_messages") < 1:
        p.error("--duration, --drain-orders and --raw-messages must be positive")
    if args.soak < 0 or (args.soak_rate is not None and args.soak_rate <= 0):
        p.error("--soak must be >= 0 and --soak-rate positive")
    return Options(quick=args.quick, duration=pick("duration"), rates=rates,
                   drain_orders=pick("drain_orders"), concurrency=args.concurrency,
                   connections=args.connections, workers=args.workers, threads=args.threads,
                   raw_messages=pick("raw_messages"), soak=args.soak, soak_rate=args.soak_rate,
                   settle_timeout=args.settle_timeout, output=args.output, configs=configs,
                   lowrate_rates=tuple(lowrate_rates), lowrate_duration=lowrate_duration,
                   only=args.only)
