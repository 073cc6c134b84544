"""Static checks of how the system is shipped: docker-compose.yml, the Dockerfile and the Procfile.

No broker and no container engine needed: `docker-compose config` validates and normalises the
compose file offline, the Dockerfile is read with each service's build arguments as Docker reads
it, and its CMD and each health check command are run here (against a stub `python` and a stub
/health server).
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from inventory_service import config as inventory_config
from notification_service import config as notification_config
from order_service import config as order_config

ROOT = Path(__file__).resolve().parents[2]
APPS = {  # compose service -> (module, port, container_name, config loader)
    "order_service": ("order_service", 8101, "async_order_service", order_config.load),
    "inventory_service": ("inventory_service", 8102, None, inventory_config.load),
    "notification_service": ("notification_service", 8103, "async_notification_service",
                             notification_config.load),
}
# Every variable some service reads; a name outside this set in the compose file is a typo.
KNOWN_VARIABLES = {
    "RABBITMQ_HOST", "RABBITMQ_PORT", "RABBITMQ_USER", "RABBITMQ_PASSWORD", "RABBITMQ_VHOST",
    "RABBITMQ_HEARTBEAT", "RABBITMQ_BLOCKED_TIMEOUT", "DATA_DIR", "PORT", "HOST", "LOG_LEVEL",
    "INVENTORY_SUCCESS_RATE", "INVENTORY_INITIAL_STOCK", "INVENTORY_MENU", "WEB_CONCURRENCY",
    "WEB_THREADS", "GRACEFUL_TIMEOUT", "PREFETCH_COUNT", "BATCH_SIZE", "TRANSIENT_RETRY_LIMIT",
    "TRANSIENT_RETRY_DELAY", "REDELIVERY_LIMIT", "SQLITE_SYNCHRONOUS", "SQLITE_BUSY_TIMEOUT_MS",
}
BROKER_VARIABLES = {"RABBITMQ_HOST", "RABBITMQ_PORT", "RABBITMQ_USER", "RABBITMQ_PASSWORD",
                    "RABBITMQ_VHOST", "DATA_DIR", "PORT"}
TO_JSON = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"


def docker_compose(*args: str) -> subprocess.CompletedProcess:
    """Run docker-compose on our compose file, or skip when it is not installed."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    return subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def load_yaml(text: str) -> Any:
    """Parse YAML with PyYAML, borrowing docker-compose's own interpreter when ours lacks it."""
    try:
        import yaml
    except ImportError:
        shebang = Path(shutil.which("docker-compose")).read_text(errors="replace").split("\n", 1)[0]
        if not shebang.startswith("#!") or "python" not in shebang:
            pytest.fail("parsing the compose file needs PyYAML (pip install pyyaml)")
        converted = subprocess.run([*shlex.split(shebang[2:]), "-c", TO_JSON], input=text,
                                   capture_output=True, text=True, check=True, timeout=60)
        return json.loads(converted.stdout)
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as docker-compose resolves it."""
    result = docker_compose("config")
    assert result.returncode == 0, result.stderr
    return load_yaml(result.stdout)


def seconds(duration: str) -> float:
    """Seconds in a compose duration such as '30s' or '1m30s'."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(duration))
    assert parts, f"not a duration: {duration!r}"
    return sum(float(value) * units[unit] for value, unit in parts)


def published(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs a service publishes."""
    return {(int(p["published"]), int(p["target"])) for p in service.get("ports", [])}


def test_compose_file_is_valid() -> None:
    result = docker_compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_services_and_published_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"rabbitmq", *APPS}
    assert published(services["rabbitmq"]) == {(5672, 5672), (15672, 15672)}
    assert published(services["order_service"]) == {(8101, 8101)}
    assert published(services["notification_service"]) == {(8103, 8103)}
    assert published(services["inventory_service"]) == set(), "replicas cannot share a host port"
    assert "8102" in [str(port) for port in services["inventory_service"].get("expose", [])]


def test_rabbitmq_is_persistent_and_really_health_checked(compose: dict[str, Any]) -> None:
    rabbitmq = compose["services"]["rabbitmq"]
    assert rabbitmq["image"] == "rabbitmq:3.10-management"
    assert rabbitmq.get("hostname"), "the node name, and with it the data directory, follows it"
    volume = next(v for v in rabbitmq["volumes"] if v.split(":")[1] == "/var/lib/rabbitmq")
    assert volume.split(":")[0] in compose["volumes"]
    assert "rabbitmq-diagnostics" in rabbitmq["healthcheck"]["test"]
    assert rabbitmq["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", APPS)
def test_service_waits_for_a_healthy_broker_and_restarts(compose: dict[str, Any],
                                                         name: str) -> None:
    service = compose["services"][name]
    _, _, container_name, load = APPS[name]
    assert service.get("container_name") == container_name
    assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert service["restart"] == "unless-stopped"
    assert service["build"]["dockerfile"] == "Dockerfile"
    assert "command" not in service and "entrypoint" not in service, "the image's CMD must run"
    assert Path(service["build"]["context"]).resolve() == ROOT
    grace = seconds(service["stop_grace_period"])
    assert grace >= 30
    if name == "order_service":
        assert grace > load(service["environment"]).graceful_timeout


@pytest.mark.parametrize("name", APPS)
def test_environment_is_one_the_service_accepts(compose: dict[str, Any], name: str) -> None:
    environment = compose["services"][name]["environment"]
    _, port, _, load = APPS[name]
    assert set(environment) >= BROKER_VARIABLES
    assert set(environment) <= KNOWN_VARIABLES
    settings = load(environment)  # raises ConfigError on a bad value
    assert settings.port == port
    assert settings.broker.host == "rabbitmq"
    assert settings.storage.data_dir == "/data"
    if name == "inventory_service":
        assert settings.success_rate == 0.9


@pytest.mark.parametrize("name", APPS)
def test_data_lives_in_a_named_volume(compose: dict[str, Any], name: str) -> None:
    mounts = [v.split(":") for v in compose["services"][name]["volumes"]]
    sources = [source for source, target, *_ in mounts if target == "/data"]
    assert len(sources) == 1 and sources[0] in compose["volumes"]
    others = {m[0] for other in APPS if other != name for m in
              (v.split(":") for v in compose["services"][other]["volumes"])}
    assert sources[0] not in others, "each service has its own database"


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in joined.splitlines() if line.strip()]


# The instructions in which Docker replaces $NAME and ${NAME} by a build argument or an ENV value;
# it leaves RUN, CMD and HEALTHCHECK to the shell, where only ENV (and, in RUN, ARG) is set.
EXPANDED = {"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}


@dataclass(frozen=True)
class Image:
    """The Dockerfile as Docker reads it with some build arguments."""

    instructions: list[tuple[str, str]]  # variables replaced where Docker replaces them
    args: dict[str, str]                 # every declared ARG, with the value it got
    env: dict[str, str]                  # what the container starts with (no build arguments)


def expand(text: str, values: Mapping[str, str]) -> str:
    """$NAME and ${NAME} in text replaced by their values (an unset one by nothing, as Docker does)."""
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: values.get(m[1] or m[2], ""), text)


def build(build_args: Mapping[str, str]) -> Image:
    args: dict[str, str] = {}
    env: dict[str, str] = {}
    instructions = []
    for keyword, text in dockerfile():
        if keyword in EXPANDED:
            text = expand(text, {**args, **env})
        if keyword == "ARG":
            name, _, default = text.partition("=")
            args[name] = build_args.get(name, default)
        elif keyword == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(text))
        instructions.append((keyword, text))
    return Image(instructions, args, env)


def build_args(compose: dict[str, Any], name: str) -> dict[str, str]:
    return {key: str(value) for key, value in compose["services"][name]["build"]["args"].items()}


def copied(image: Image) -> set[str]:
    """What the COPY instructions put into the image."""
    return {args.split()[-1].rstrip("/") for keyword, args in image.instructions if keyword == "COPY"}


@pytest.mark.parametrize("name", APPS)
def test_build_arguments_name_the_service_and_the_port_its_config_reads(compose: dict[str, Any],
                                                                       name: str) -> None:
    module, port, _, _ = APPS[name]
    args = build_args(compose, name)
    assert args == {"SERVICE": module, "PORT": str(port)}
    assert set(args) <= set(build(args).args), "Docker ignores a build argument nobody declares"
    assert importlib.util.find_spec(f"{args['SERVICE']}.__main__") is not None
    environment = compose["services"][name]["environment"]
    assert environment["PORT"] == args["PORT"], "the service must listen on the port the image exposes"
    config = importlib.import_module(f"{args['SERVICE']}.config")
    assert config.load(environment).port == int(args["PORT"])


@pytest.mark.parametrize("name", APPS)
def test_image_runs_the_service_as_non_root(compose: dict[str, Any], name: str) -> None:
    module, port, _, load = APPS[name]
    image = build(build_args(compose, name))
    found = dict(image.instructions)  # the last of each instruction, as Docker applies them
    assert found["FROM"] == "python:3.11-slim"
    assert "ENTRYPOINT" not in found
    assert found["USER"] not in ("root", "0")
    assert image.env["DATA_DIR"] == "/data"
    assert json.loads(found["VOLUME"]) == ["/data"]
    assert found["EXPOSE"] == str(port)
    assert image.env["PORT"] == str(port)
    settings = load(image.env)  # started without compose's environment (docker run)
    assert (settings.port, settings.storage.data_dir) == (port, "/data")
    assert any(args == "pip install -r requirements.txt" for keyword, args in image.instructions
               if keyword == "RUN")
    assert {"messaging", "ops", module} <= copied(image)


@pytest.mark.parametrize("name", APPS)
def test_image_command_is_python_dash_m_the_service(compose: dict[str, Any], name: str,
                                                    tmp_path: Path) -> None:
    """Run the CMD as the container would: with the image's ENV only, the build arguments gone."""
    image = build(build_args(compose, name))
    commands = [json.loads(args) for keyword, args in image.instructions if keyword == "CMD"]
    assert len(commands) == 1
    # A stand-in `python` that prints its parent and its arguments; nothing else is on PATH but sh.
    (tmp_path / "python").write_text('#!/bin/sh\necho "$PPID"\nprintf \'%s\\n\' "$@"\n')
    (tmp_path / "python").chmod(0o755)
    (tmp_path / "sh").symlink_to(shutil.which("sh"))
    result = subprocess.run(commands[0], env={**image.env, "PATH": str(tmp_path)}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    parent, *argv = result.stdout.splitlines()
    assert argv == ["-m", APPS[name][0]]
    assert int(parent) == os.getpid(), "python must be the main process (exec), so SIGTERM reaches it"


def test_build_refuses_a_missing_or_unknown_service_or_port(compose: dict[str, Any]) -> None:
    """The RUN that checks the build arguments, run where the image has the code (WORKDIR)."""
    checks = [args for keyword, args in dockerfile() if keyword == "RUN" and "$SERVICE" in args]
    assert len(checks) == 1
    clean = {key: value for key, value in os.environ.items() if key not in ("SERVICE", "PORT")}

    def accepted(args: Mapping[str, str]) -> bool:
        return subprocess.run(["sh", "-c", checks[0]], cwd=ROOT, env={**clean, **args},
                              capture_output=True, timeout=30).returncode == 0

    assert all(accepted(build_args(compose, name)) for name in APPS)
    for args in ({}, {"PORT": "8101"}, {"SERVICE": "order_service"}, {"SERVICE": "messaging", "PORT": "8101"},
                 {"SERVICE": "order-service", "PORT": "8101"}, {"SERVICE": "order_service", "PORT": "http"}):
        assert not accepted(args), args


def test_image_holds_everything_the_operator_tools_import() -> None:
    imported = set()
    for path in (ROOT / "ops").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    first_party = {name for name in imported if (ROOT / name / "__init__.py").exists()}
    assert {"ops", *first_party} <= copied(build({}))


class StubHealth(BaseHTTPRequestHandler):
    """Answers GET /health with the status the test sets on the server."""

    def do_GET(self) -> None:
        status = self.server.status if self.path == "/health" else 404  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def free_port() -> int:
    """A port nothing listens on."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHealth)
    port = server.server_address[1]
    server.server_close()
    return port


@pytest.fixture
def stub_health() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def health_commands(compose: dict[str, Any], name: str) -> dict[str, list[str]]:
    """The Dockerfile's and the compose file's health check, as argv runnable here."""
    instruction = dict(build(build_args(compose, name)).instructions)["HEALTHCHECK"]
    shell_form = instruction.split(" CMD ", 1)[1]
    test = compose["services"][name]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python", test
    return {"Dockerfile": ["sh", "-c", shell_form], "compose": [sys.executable, *test[2:]]}


@pytest.mark.parametrize("name", APPS)
def test_health_checks_pass_only_on_http_200_from_health(compose: dict[str, Any], name: str,
                                                        stub_health: ThreadingHTTPServer) -> None:
    port = stub_health.server_address[1]
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "PORT": str(port)}
    for source, argv in health_commands(compose, name).items():
        for status, healthy in ((200, True), (503, False), (404, False)):
            stub_health.status = status  # type: ignore[attr-defined]
            result = subprocess.run(argv, env=env, capture_output=True, timeout=30)
            assert (result.returncode == 0) == healthy, (source, status, result.stderr)
        closed = {**env, "PORT": str(free_port())}
        assert subprocess.run(argv, env=closed, capture_output=True, timeout=30).returncode != 0


def test_procfile_runs_exactly_the_three_entrypoints() -> None:
    lines = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()]
    processes = dict(line.split(":", 1) for line in lines)
    assert set(processes) == set(APPS)
    for name, command in processes.items():
        module, port, _, _ = APPS[name]
        words = shlex.split(command)
        assignments = dict(word.split("=", 1) for word in words if re.match(r"^[A-Z_]+=", word))
        # honcho sets PORT=5000, 5100, ... itself; each line pins the service's own port.
        assert assignments == {"PORT": str(port)}
        assert words[len(assignments):] == ["python", "-m", module]


def test_dockerignore_keeps_what_the_images_copy() -> None:
    patterns = (ROOT / ".dockerignore").read_text().split()
    sources = [source for keyword, args in dockerfile() if keyword == "COPY"
               for source in args.split()[:-1]]
    assert sources
    for needed in sources:
        assert f"!{needed}" in patterns
