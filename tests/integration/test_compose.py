"""Static checks of how the system is shipped: docker-compose.yml (with docker-compose.cluster.yml),
the files they mount, .env.example, the Dockerfile and the Procfile.

No broker and no container engine needed: `docker-compose config` validates and normalises the
compose files offline (with the default credentials, or with others from an env file or the
environment), the Dockerfile is read with each service's build arguments as Docker reads
it, and its CMD and each health check command are run here (against a stub `python` and a stub
/health server).
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from inventory_service import config as inventory_config
from messaging.settings import ConsumerSettings
from notification_service import config as notification_config
from ops import identities as ops_identities
from order_service import config as order_config
from stack.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
APPS = {  # compose service -> (module, port, database, config loader); none has a container_name
    "order_service": ("order_service", 8101, "orders", order_config.load),
    "inventory_service": ("inventory_service", 8102, "inventory", inventory_config.load),
    "notification_service": ("notification_service", 8103, "notifications",
                             notification_config.load),
}
BASE = ("docker-compose.yml",)
CLUSTER = ("docker-compose.yml", "docker-compose.cluster.yml")
GATEWAY = ("docker-compose.yml", "docker-compose.gateway.yml")
# What docker-compose.gateway.yml needs and has no default for.
SIGN_IN = {"OIDC_ISSUER": "https://sso.campus.example/realms/food", "OIDC_CLIENT_ID": "food-orders",
           "OIDC_CLIENT_SECRET": "s3cret-client",
           "OAUTH2_PROXY_COOKIE_SECRET": "0123456789abcdef0123456789abcdef"}
# Every variable some service reads (checked against the code below); a name outside this set in
# the compose files is a typo.
KNOWN_VARIABLES = {
    "RABBITMQ_HOST", "RABBITMQ_PORT", "RABBITMQ_USER", "RABBITMQ_PASSWORD", "RABBITMQ_VHOST",
    "RABBITMQ_HEARTBEAT", "RABBITMQ_BLOCKED_TIMEOUT", "RABBITMQ_QUEUE_TYPE", "DATABASE_URL",
    "DATA_DIR", "PORT", "HOST", "LOG_LEVEL",
    "INVENTORY_SUCCESS_RATE", "INVENTORY_INITIAL_STOCK", "INVENTORY_MENU", "WEB_CONCURRENCY",
    "WEB_THREADS", "GRACEFUL_TIMEOUT", "PREFETCH_COUNT", "BATCH_SIZE", "TRANSIENT_RETRY_LIMIT",
    "TRANSIENT_RETRY_DELAY", "REDELIVERY_LIMIT", "MAX_MESSAGE_BYTES", "SQLITE_SYNCHRONOUS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "METRICS", "METRICS_PORT", "RATE_LIMIT_ORDERS", "REDIS_URL", "RATE_LIMIT_PREFIX", "TRUSTED_PROXIES",
    "RABBITMQ_TOPOLOGY", "ORDER_PUBLISHER_USER", "INVENTORY_PUBLISHER_USER",
}
# OrderService's sign-in (docker-compose.gateway.yml sets them).
KNOWN_VARIABLES |= {"AUTH", "OIDC_ISSUER", "OIDC_AUDIENCE", "OIDC_JWKS_URL", "OIDC_STAFF_ROLE",
                    "OIDC_ROLES_CLAIM"}
# AMQP over TLS (docs/deployment.md, "Encryption in transit").
KNOWN_VARIABLES |= {"RABBITMQ_TLS", "RABBITMQ_TLS_CA_FILE", "RABBITMQ_TLS_CERT_FILE",
                    "RABBITMQ_TLS_KEY_FILE", "RABBITMQ_TLS_VERIFY_HOSTNAME"}
# Logs and traces (README "Following one order"): the standard OpenTelemetry names.
KNOWN_VARIABLES |= {
    "LOG_FORMAT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
}
# What compose must set on every service: where the broker and the database are, how to log in,
# which queue type, which port.
REQUIRED_VARIABLES = {"RABBITMQ_HOST", "RABBITMQ_PORT", "RABBITMQ_USER", "RABBITMQ_PASSWORD",
                      "RABBITMQ_VHOST", "RABBITMQ_QUEUE_TYPE", "DATABASE_URL", "DATA_DIR", "PORT",
                      "RABBITMQ_TOPOLOGY", "ORDER_PUBLISHER_USER", "INVENTORY_PUBLISHER_USER"}
# Each service's own broker user and database role (the names compose gives them), and the
# variables their passwords come from.
IDENTITIES = {"order_service": "ORDER_SERVICE", "inventory_service": "INVENTORY_SERVICE",
              "notification_service": "NOTIFICATION_SERVICE"}
# Settings a .env file may choose, beside the credentials.
CHOICES = ("LOG_FORMAT",)
# The variables compose takes the credentials from (a .env file or the environment may set them).
CREDENTIALS = ("RABBITMQ_USER", "RABBITMQ_PASSWORD", "POSTGRES_USER", "POSTGRES_PASSWORD",
               "RABBITMQ_ERLANG_COOKIE", "GRAFANA_ADMIN_PASSWORD",
               *(f"{prefix}_{system}_PASSWORD" for prefix in IDENTITIES.values()
                 for system in ("RABBITMQ", "POSTGRES")))
# The secrets among them: compose refuses to start without each (no known password to fall back to).
SECRETS = tuple(name for name in CREDENTIALS if name.endswith(("_PASSWORD", "_COOKIE")))
OTHER_CREDENTIALS = {"RABBITMQ_USER": "ops-user", "RABBITMQ_PASSWORD": "s3cret-amqp",
                     "POSTGRES_USER": "ops-db", "POSTGRES_PASSWORD": "s3cret-sql",
                     "RABBITMQ_ERLANG_COOKIE": "another-cookie-of-some-length",
                     "GRAFANA_ADMIN_PASSWORD": "s3cret-dashboards",
                     **{f"{prefix}_{system}_PASSWORD": f"s3cret-{prefix.lower()}-{system.lower()}"
                        for prefix in IDENTITIES.values() for system in ("RABBITMQ", "POSTGRES")}}
# The services only `docker compose --profile monitoring up` starts.
MONITORING = {"prometheus", "grafana"}
TO_JSON = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"


def docker_compose(*args: str, files: tuple[str, ...] = BASE, env_file: Path | None = None,
                   environ: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run docker-compose on our compose files, or skip when it is not installed.

    The credentials come from `env_file` and `environ` only: never from the caller's environment
    or a developer's own .env (an empty env file stands in for it). The monitoring profile is
    enabled, so that every service is listed whichever docker-compose runs (1.x lists them all,
    2.x only those of the enabled profiles)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("COMPOSE_") and k not in CREDENTIALS}
    env.update(environ or {})
    with tempfile.TemporaryDirectory() as empty:
        if env_file is None:
            env_file = Path(empty) / "empty.env"
            env_file.write_text("")
        selected = [arg for name in files for arg in ("-f", str(ROOT / name))]
        return subprocess.run([binary, "--env-file", str(env_file), *selected,
                               "--profile", "monitoring", *args], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)


def resolved(files: tuple[str, ...] = BASE, **kwargs: Any) -> dict[str, Any]:
    """The compose files as docker-compose resolves them (with .env.example's secrets, unless
    another env file is given)."""
    kwargs.setdefault("env_file", ROOT / ".env.example")
    result = docker_compose("config", files=files, **kwargs)
    assert result.returncode == 0, result.stderr
    return load_yaml(result.stdout)


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
    """docker-compose.yml as docker-compose resolves it, with the default credentials."""
    return resolved(BASE)


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    """docker-compose.yml with docker-compose.cluster.yml, with the default credentials."""
    return resolved(CLUSTER)


@pytest.fixture(scope="module", params=["single broker", "cluster"])
def either(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each way of running the system, resolved with the default credentials."""
    return resolved(BASE if request.param == "single broker" else CLUSTER)


def seconds(duration: str) -> float:
    """Seconds in a compose duration such as '30s' or '1m30s'."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(duration))
    assert parts, f"not a duration: {duration!r}"
    return sum(float(value) * units[unit] for value, unit in parts)


def ports(service: dict[str, Any]) -> set[tuple[str, int, int]]:
    """(host address, host port, container port) of each port a service publishes; the address is
    "" for every interface. docker-compose writes a port bound to an address as a short string."""
    found = set()
    for port in service.get("ports", []):
        if isinstance(port, str):
            *address, host_port, target = port.split("/")[0].split(":")
            found.add((address[0] if address else "", int(host_port), int(target)))
        else:
            found.add((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
    return found


def published(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs a service publishes."""
    return {(host_port, target) for _, host_port, target in ports(service)}


def brokers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The RabbitMQ services (one, or the cluster's nodes)."""
    return {name: service for name, service in compose["services"].items()
            if service.get("image", "").startswith("rabbitmq:")}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source of each volume or bind mount of a service."""
    return {parts[1]: parts[0] for parts in (v.split(":") for v in service.get("volumes", []))}


def read_variables() -> set[str]:
    """Every variable the services' code reads: the name given to env_str/env_int/env_float/
    env_choice or to env.get / os.environ.get, in messaging/ and the three service packages."""
    readers = {"env_str", "env_int", "env_float", "env_choice", "_env_number"}
    found = set()
    for package in ("messaging", *APPS):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                index = 1 if name in readers else 0 if name == "get" else None
                if index is None or len(node.args) <= index:
                    continue
                argument = node.args[index]
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str) \
                        and re.fullmatch(r"[A-Z][A-Z0-9_]+", argument.value):
                    found.add(argument.value)
    return found


REQUIRED = "(required)"


def interpolated(*files: str) -> dict[str, set[str]]:
    """Each ${VAR:-default}, ${VAR:?message} (or ${VAR}) in the compose files: VAR -> the defaults
    it is given, REQUIRED for one without."""
    found: dict[str, set[str]] = {}
    for name in files:
        text = (ROOT / name).read_text()
        for var, kind, default in re.findall(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", text):
            found.setdefault(var, set()).add(REQUIRED if kind == ":?" else default)
    return found


@pytest.mark.parametrize("files", [BASE, CLUSTER], ids=["single broker", "cluster"])
@pytest.mark.parametrize("source", ["env file", "environment", ".env.example"])
def test_compose_files_are_valid(files: tuple[str, ...], source: str, tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {}
    if source == "env file":
        kwargs["env_file"] = tmp_path / "override.env"
        kwargs["env_file"].write_text("".join(f"{k}={v}\n" for k, v in OTHER_CREDENTIALS.items()))
    elif source == "environment":
        kwargs["environ"] = OTHER_CREDENTIALS
    elif source == ".env.example":
        kwargs["env_file"] = ROOT / ".env.example"
    result = docker_compose("config", "-q", files=files, **kwargs)
    assert result.returncode == 0, result.stderr
    assert "is not set" not in result.stderr, result.stderr


def test_services_and_published_ports(compose: dict[str, Any], cluster: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"rabbitmq", "rabbitmq_identities", "postgres", "redis", "order_gateway",
                             *APPS, *MONITORING}
    assert set(cluster["services"]) == {*services, "rabbitmq-2", "rabbitmq-3"}
    assert published(services["rabbitmq"]) == {(5672, 5672), (15672, 15672)}, "the spec's ports"
    assert published(services["order_gateway"]) == {(8101, 8101)}, "the spec's OrderService port"
    assert published(services["postgres"]) == set(), "a local PostgreSQL may hold 5432"
    assert published(services["redis"]) == set(), "the rate limit's counts stay inside"
    assert published(services["prometheus"]) == {(9090, 9090)}
    assert published(services["grafana"]) == {(3000, 3000)}
    for name in ("rabbitmq-2", "rabbitmq-3"):
        assert published(cluster["services"][name]) == set()
    for name, (_, port, _, _) in APPS.items():
        assert str(port) in [str(p) for p in services[name].get("expose", [])]


@pytest.mark.parametrize("name", APPS)
def test_every_service_can_be_scaled(either: dict[str, Any], name: str) -> None:
    """`--scale name=N` starts N containers: none may have a fixed name or host port."""
    service = either["services"][name]
    assert "container_name" not in service
    assert "ports" not in service, "replicas cannot share a host port"
    assert "hostname" not in service
    assert not [source for source in mounts(service).values() if not source.startswith("/")], \
        "the store is the service's PostgreSQL database, not a volume"


def test_gateway_publishes_every_order_service_replica_on_8101(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["order_gateway"]
    assert gateway["depends_on"]["order_service"]["condition"] == "service_healthy"
    config_file = Path(mounts(gateway)["/etc/nginx/conf.d/default.conf"])
    assert config_file == ROOT / "compose" / "order-gateway" / "nginx.conf"
    text = re.sub(r"#.*", "", config_file.read_text())
    assert re.search(r"^\s*listen\s+8101;", text, re.M)
    # Resolved per request through Docker's DNS, so it reaches the replicas --scale adds.
    assert re.search(r"^\s*resolver\s+127\.0\.0\.11\b", text, re.M)
    upstream = re.search(r"set\s+\$(\w+)\s+http://order_service:8101;", text)
    assert upstream and re.search(rf"proxy_pass\s+\${upstream[1]};", text)
    assert "non_idempotent" not in text, "a POST that reached a replica must not be sent again"


@pytest.fixture(scope="module")
def gateway() -> dict[str, Any]:
    """docker-compose.yml with docker-compose.gateway.yml, given the sign-in variables."""
    return resolved(GATEWAY, environ=SIGN_IN)


@pytest.mark.parametrize("missing", sorted(SIGN_IN))
def test_the_sign_in_gateway_refuses_to_start_without_its_variables(missing: str) -> None:
    result = docker_compose("config", "-q", files=GATEWAY, env_file=ROOT / ".env.example",
                            environ={k: v for k, v in SIGN_IN.items() if k != missing})
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


def test_the_sign_in_gateway_fronts_the_order_gateway_and_passes_the_token(gateway: dict[str, Any]) -> None:
    proxy = gateway["services"]["oauth2_proxy"]
    assert published(proxy) == {(4180, 4180)}
    assert published(gateway["services"]["order_gateway"]) == {(8101, 8101)}, "the API's door stays"
    environment = proxy["environment"]
    assert environment["OAUTH2_PROXY_UPSTREAMS"] == "http://order_gateway:8101/"
    assert environment["OAUTH2_PROXY_PROVIDER"] == "oidc"
    assert environment["OAUTH2_PROXY_PASS_AUTHORIZATION_HEADER"] == "true", "Authorization: Bearer"
    assert environment["OAUTH2_PROXY_OIDC_ISSUER_URL"] == SIGN_IN["OIDC_ISSUER"]
    assert environment["OAUTH2_PROXY_CLIENT_ID"] == SIGN_IN["OIDC_CLIENT_ID"]
    assert environment["OAUTH2_PROXY_COOKIE_SECRET"] == SIGN_IN["OAUTH2_PROXY_COOKIE_SECRET"]
    assert len(environment["OAUTH2_PROXY_COOKIE_SECRET"]) in (16, 24, 32)


def test_behind_the_sign_in_gateway_order_service_verifies_its_tokens(gateway: dict[str, Any]) -> None:
    environment = gateway["services"]["order_service"]["environment"]
    assert set(environment) <= KNOWN_VARIABLES
    settings = order_config.load(environment)
    assert (settings.auth, settings.oidc_issuer, settings.oidc_audience) == (
        "oidc", SIGN_IN["OIDC_ISSUER"], SIGN_IN["OIDC_CLIENT_ID"]), "the ID token's audience: the client"
    assert settings.oidc_jwks_url is None, "discovered from the issuer"
    for name in ("inventory_service", "notification_service"):
        assert "AUTH" not in gateway["services"][name]["environment"]


def test_rabbitmq_is_persistent_and_really_health_checked(either: dict[str, Any]) -> None:
    volumes = []
    for rabbitmq in brokers(either).values():
        assert rabbitmq["image"] == "rabbitmq:3.10-management"
        assert rabbitmq.get("hostname"), "the node name, and with it the data directory, follows it"
        volumes.append(mounts(rabbitmq)["/var/lib/rabbitmq"])
        assert volumes[-1] in either["volumes"]
        assert "rabbitmq-diagnostics" in rabbitmq["healthcheck"]["test"]
        assert rabbitmq["restart"] == "unless-stopped"
    assert len(set(volumes)) == len(volumes), "each node has its own data"


def test_postgres_creates_one_database_per_service_and_is_health_checked(
        compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"].split(":")[0] == "postgres"
    assert mounts(postgres)["/var/lib/postgresql/data"] in compose["volumes"]
    init = [source for target, source in mounts(postgres).items()
            if target.startswith("/docker-entrypoint-initdb.d/")]
    assert [Path(source) for source in init] == [ROOT / "compose" / "postgres" / "init-databases.sh"]
    assert set(init_script_databases()) == {database for _, _, database, _ in APPS.values()}
    test = postgres["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    # Over TCP: the image's server during initialisation listens on the Unix socket only.
    assert test[test.index("-h") + 1] == "127.0.0.1"
    assert postgres["restart"] == "unless-stopped"


INIT_SQL = ["CREATE ROLE :\"role\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password'",
            "CREATE DATABASE :\"db\" OWNER :\"role\" ENCODING 'UTF8' TEMPLATE template0",
            "REVOKE ALL ON DATABASE :\"db\" FROM PUBLIC"]
# ...and the server's own databases closed to the service roles too.
INIT_CLOSING_SQL = ["REVOKE CONNECT ON DATABASE postgres FROM PUBLIC",
                    "REVOKE CONNECT ON DATABASE :\"owner\" FROM PUBLIC"]


def init_script_databases() -> dict[str, tuple[str, str]]:
    """database -> (role, password variable) the init script creates; it may do nothing else: each
    database owned by its login role, which is no superuser, and closed to every other role."""
    text = (ROOT / "compose" / "postgres" / "init-databases.sh").read_text()
    sql, closing = re.findall(r"<<'SQL'\n(.*?)\nSQL\n", text, re.S)
    assert [s.strip() for s in sql.split(";") if s.strip()] == INIT_SQL
    assert [s.strip() for s in closing.split(";") if s.strip()] == INIT_CLOSING_SQL
    calls = re.findall(r"^create (\S+) (\S+) \"\$(\w+)\"$", text, re.M)
    assert len(calls) == len([line for line in text.splitlines() if line.startswith("create ")])
    assert len({db for db, _, _ in calls}) == len({role for _, role, _ in calls}) == len(calls)
    return {db: (role, variable) for db, role, variable in calls}


@pytest.mark.parametrize("name", APPS)
def test_service_uses_its_own_database_as_its_own_role(either: dict[str, Any], name: str) -> None:
    _, _, database, load = APPS[name]
    postgres = either["services"]["postgres"]["environment"]
    url = load(either["services"][name]["environment"]).storage.database_url
    assert url is not None
    parts = urlsplit(url)
    assert parts.scheme == "postgresql"
    assert (parts.hostname, parts.port) == ("postgres", 5432)
    assert parts.path == f"/{database}"
    role, variable = init_script_databases()[database]
    assert (parts.username, variable) == (name, f"{IDENTITIES[name]}_POSTGRES_PASSWORD")
    assert parts.password == postgres[variable], "the password the init script gives the role"
    assert parts.username == role != postgres["POSTGRES_USER"], "never the superuser"


@pytest.mark.parametrize("name", APPS)
def test_service_waits_for_a_healthy_broker_and_database_and_restarts(
        either: dict[str, Any], name: str) -> None:
    service = either["services"][name]
    _, _, _, load = APPS[name]
    wanted = {*brokers(either), "postgres"} | ({"redis"} if name == "order_service" else set())
    assert set(service["depends_on"]) == wanted | {"rabbitmq_identities"}
    assert all(d["condition"] == "service_healthy" for n, d in service["depends_on"].items()
               if n in wanted)
    assert service["depends_on"]["rabbitmq_identities"]["condition"] == \
        "service_completed_successfully", "its broker user exists before it logs in"
    assert service["restart"] == "unless-stopped"
    assert service["build"]["dockerfile"] == "Dockerfile"
    assert "command" not in service and "entrypoint" not in service, "the image's CMD must run"
    assert Path(service["build"]["context"]).resolve() == ROOT
    grace = seconds(service["stop_grace_period"])
    assert grace >= 30
    if name == "order_service":
        assert grace > load(service["environment"]).graceful_timeout


def test_known_variables_are_those_the_code_reads() -> None:
    assert read_variables() == KNOWN_VARIABLES


@pytest.mark.parametrize("name", APPS)
def test_environment_is_one_the_service_accepts(either: dict[str, Any], name: str) -> None:
    environment = either["services"][name]["environment"]
    _, port, _, load = APPS[name]
    assert set(environment) >= REQUIRED_VARIABLES
    assert set(environment) <= KNOWN_VARIABLES
    settings = load(environment)  # raises ConfigError on a bad value
    assert settings.port == port
    assert settings.storage.data_dir == "/data"
    nodes = sorted(service["hostname"] for service in brokers(either).values())
    assert sorted(host for host, _ in settings.broker.nodes) == nodes
    assert all(port == 5672 for _, port in settings.broker.nodes)
    assert settings.broker.queue_type == ("quorum" if len(nodes) > 1 else "classic")
    if name == "inventory_service":
        assert settings.success_rate == 0.9


def test_order_service_limits_orders_through_redis_behind_the_gateway(either: dict[str, Any]) -> None:
    services = either["services"]
    settings = order_config.load(services["order_service"]["environment"])
    assert settings.rate_limit_orders, "compose limits POST /order"
    url = urlsplit(settings.redis_url or "")
    assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379)
    redis = services["redis"]
    assert redis["image"].startswith("redis:") and "redis-cli" in redis["healthcheck"]["test"]
    assert redis["restart"] == "unless-stopped"
    assert set(redis["networks"]) & set(services["order_service"]["networks"])
    # X-Forwarded-For is believed from the gateway's fixed address alone.
    [(network, attachment)] = services["order_gateway"]["networks"].items()
    gateway = ipaddress.ip_address(attachment["ipv4_address"])
    [config] = either["networks"][network]["ipam"]["config"]
    subnet, others = ipaddress.ip_network(config["subnet"]), ipaddress.ip_network(config["ip_range"])
    assert gateway in subnet
    assert others.subnet_of(subnet) and gateway not in others, \
        "no container given an address (a replica started first) can take the gateway's"
    assert [str(n) for n in settings.trusted_proxies] == [f"{gateway}/32"]


def test_order_service_serves_its_metrics_off_the_gateways_port(either: dict[str, Any]) -> None:
    service = either["services"]["order_service"]
    settings = order_config.load(service["environment"])
    assert settings.metrics_port and settings.metrics_port != settings.port
    assert str(settings.metrics_port) in [str(p) for p in service["expose"]]
    assert "ports" not in service, "the metrics port is not published"
    text = re.sub(r"#.*", "", (ROOT / "compose" / "order-gateway" / "nginx.conf").read_text())
    assert str(settings.metrics_port) not in text, "the gateway passes the public port only"


def credentials(compose: dict[str, Any]) -> dict[str, set[str]]:
    """Every value compose gives each credential, gathered from every container."""
    found: dict[str, set[str]] = {}

    def add(key: str, value: str | None) -> None:
        found.setdefault(key, set()).add(value or "")

    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        if name in brokers(compose):
            add("RABBITMQ_USER", environment.get("RABBITMQ_DEFAULT_USER"))
            add("RABBITMQ_PASSWORD", environment.get("RABBITMQ_DEFAULT_PASS"))
            if len(brokers(compose)) > 1:
                add("RABBITMQ_ERLANG_COOKIE", environment.get("RABBITMQ_ERLANG_COOKIE"))
        elif name == "grafana":
            add("GRAFANA_ADMIN_PASSWORD", environment.get("GF_SECURITY_ADMIN_PASSWORD"))
        elif name == "postgres":
            add("POSTGRES_USER", environment.get("POSTGRES_USER"))
            add("POSTGRES_PASSWORD", environment.get("POSTGRES_PASSWORD"))
            for prefix in IDENTITIES.values():
                add(f"{prefix}_POSTGRES_PASSWORD", environment.get(f"{prefix}_POSTGRES_PASSWORD"))
            test = service["healthcheck"]["test"]
            add("POSTGRES_USER", test[test.index("-U") + 1])
        elif name == "rabbitmq_identities":
            add("RABBITMQ_USER", environment.get("RABBITMQ_USER"))
            add("RABBITMQ_PASSWORD", environment.get("RABBITMQ_PASSWORD"))
            for prefix in IDENTITIES.values():
                key = f"{prefix}_RABBITMQ_PASSWORD"
                add(key, environment.get(key))
        elif name in APPS:
            prefix = IDENTITIES[name]
            add(f"{prefix}_RABBITMQ_PASSWORD", environment.get("RABBITMQ_PASSWORD"))
            add(f"{prefix}_POSTGRES_PASSWORD", urlsplit(environment.get("DATABASE_URL", "")).password)
    return found


@pytest.mark.parametrize("files", [BASE, CLUSTER], ids=["single broker", "cluster"])
def test_default_credentials_are_shared_and_not_guest(files: tuple[str, ...]) -> None:
    found = credentials(resolved(files))
    assert all(len(values) == 1 for values in found.values()), found
    value = {key: next(iter(values)) for key, values in found.items()}
    assert all(value.values()), value
    assert (value["RABBITMQ_USER"], value["RABBITMQ_PASSWORD"]) != ("guest", "guest")
    assert value["RABBITMQ_USER"] != "guest", "RabbitMQ lets guest in from its own host only"


@pytest.mark.parametrize("files", [BASE, CLUSTER], ids=["single broker", "cluster"])
@pytest.mark.parametrize("source", ["env file", "environment"])
def test_credentials_come_from_the_variables(files: tuple[str, ...], source: str,
                                             tmp_path: Path) -> None:
    """Set from a .env-style file or the environment, each reaches every container that uses it,
    and no default is left behind anywhere."""
    defaults = {key: next(iter(values)) for key, values in credentials(resolved(files)).items()}
    if source == "env file":
        env_file = tmp_path / "override.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in OTHER_CREDENTIALS.items()))
        result = docker_compose("config", files=files, env_file=env_file)
    else:
        result = docker_compose("config", files=files, environ=OTHER_CREDENTIALS)
    assert result.returncode == 0, result.stderr
    found = credentials(load_yaml(result.stdout))
    assert found == {key: {OTHER_CREDENTIALS[key]} for key in found}
    for key, default in defaults.items():
        assert default not in result.stdout, f"{key}'s default {default!r} is still set somewhere"


def test_env_example_documents_exactly_the_variables_with_their_defaults() -> None:
    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    used = interpolated(*CLUSTER)
    assert set(example) == set(used) == set(CREDENTIALS) | set(CHOICES)
    for key, defaults in used.items():
        if key in SECRETS:
            assert defaults == {REQUIRED}, f"{key} is a secret: required, never a default"
            assert example[key], f"{key}: .env.example gives a laptop's value"
        else:
            assert defaults == {example[key]}, f"{key}: one default everywhere, as .env.example says"
    assert "guest" not in (example["RABBITMQ_USER"], example["RABBITMQ_PASSWORD"])
    in_urls = [example[f"{prefix}_POSTGRES_PASSWORD"] for prefix in IDENTITIES.values()]
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", "".join(in_urls)), "the defaults go into DATABASE_URL unencoded"


def test_a_real_env_file_is_never_committed() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, timeout=30)
    assert ignored.returncode == 0, ".env must be in .gitignore"
    tracked = subprocess.run(["git", "ls-files", "--", ".env"], cwd=ROOT, capture_output=True,
                             text=True, timeout=30)
    assert tracked.stdout.strip() == ""


def cluster_peers(path: Path) -> list[str]:
    """The node names in a rabbitmq.conf's classic-config peer list (and that it is one)."""
    settings = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    assert settings["cluster_formation.peer_discovery_backend"] in ("classic_config",
                                                                    "rabbit_peer_discovery_classic_config")
    return [value for key, value in settings.items()
            if key.startswith("cluster_formation.classic_config.nodes.")]


def test_cluster_nodes_are_the_peer_list_and_share_a_cookie(cluster: dict[str, Any]) -> None:
    nodes = brokers(cluster)
    assert len(nodes) == 3
    network_names = {name: {name, *(alias for network in (service.get("networks") or {}).values()
                                    for alias in ((network or {}).get("aliases") or []))}
                     for name, service in nodes.items()}
    peers = None
    for name, service in nodes.items():
        conf = Path(mounts(service)["/etc/rabbitmq/conf.d/20-cluster.conf"])
        assert conf == ROOT / "compose" / "rabbitmq-cluster" / "rabbitmq.conf", name
        peers = cluster_peers(conf)
        assert service["hostname"] in network_names[name], "peers reach a node by its host name"
    assert peers is not None and len(peers) == len(set(peers))
    assert sorted(peers) == sorted(f"rabbit@{service['hostname']}" for service in nodes.values())
    cookies = {service["environment"]["RABBITMQ_ERLANG_COOKIE"] for service in nodes.values()}
    assert len(cookies) == 1 and len(next(iter(cookies))) >= 20
    # The other nodes start once the first is up, and so join its cluster.
    first = [name for name, service in nodes.items() if "depends_on" not in service]
    assert len(first) == 1
    for name, service in nodes.items():
        if name not in first:
            assert service["depends_on"] == {first[0]: {"condition": "service_healthy"}}


def test_single_broker_is_not_clustered(compose: dict[str, Any]) -> None:
    (rabbitmq,) = brokers(compose).values()
    assert [target for target in mounts(rabbitmq) if target.startswith("/etc/rabbitmq")] == \
        ["/etc/rabbitmq/conf.d/30-limits.conf"], "no peer list: the limits only"
    assert "RABBITMQ_ERLANG_COOKIE" not in rabbitmq.get("environment", {})


def test_every_broker_refuses_messages_larger_than_the_consumers_take(either: dict[str, Any]) -> None:
    """max_message_size on each node equals MAX_MESSAGE_BYTES's default: no consumer is sent a body it
    would only dead-letter, and none holds more than PREFETCH_COUNT bodies of that size."""
    limits = ROOT / "compose" / "rabbitmq" / "limits.conf"
    settings = dict(line.replace(" ", "").split("=", 1) for line in limits.read_text().splitlines()
                    if line.strip() and not line.startswith("#"))
    assert int(settings["max_message_size"]) == ConsumerSettings().max_message_bytes
    for name, service in brokers(either).items():
        assert Path(mounts(service)["/etc/rabbitmq/conf.d/30-limits.conf"]) == limits, name


def test_every_broker_node_sleeps_rather_than_spins_when_out_of_work(either: dict[str, Any]) -> None:
    """No node's schedulers busy-wait when they run out of work (+sbwt, +sbwtdcpu and +sbwtdio
    none): on cores the services share, an idle node's spinning would take their CPU."""
    nodes = brokers(either)
    assert nodes
    for name, service in nodes.items():
        assert service["environment"].get("RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD") == "none", name


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


def test_each_service_is_a_broker_user_of_its_own_and_none_the_operator(either: dict[str, Any]) -> None:
    services = either["services"]
    operator = {s["environment"]["RABBITMQ_DEFAULT_USER"] for s in brokers(either).values()}
    identities = services["rabbitmq_identities"]
    made = ops_identities.service_users(identities["environment"])
    assert {identities["environment"]["RABBITMQ_USER"]} == operator, "made by the operator"
    assert identities["command"] == ["python", "-m", "ops.identities"]
    assert identities["restart"] == "no" and identities["depends_on"]["rabbitmq"]["condition"] == \
        "service_healthy"
    users = {}
    for name in APPS:
        settings = APPS[name][3](services[name]["environment"]).broker
        service = name.removesuffix("_service")
        users[service] = settings.user
        assert settings.user not in operator and settings.user != "guest"
        assert made[service] == (settings.user, settings.password), "the user rabbitmq_identities makes"
        assert settings.part == service, "declares only what its own user may (RABBITMQ_TOPOLOGY=own)"
        assert dict(settings.senders) == {"order": made["order"][0], "inventory": made["inventory"][0]}
    assert len(set(users.values())) == len(APPS)


# --- safe by default ---

# What may be published on every interface of the host: the doors (the API and the signed-in page).
PUBLIC_DOORS = {"order_gateway": {8101}, "oauth2_proxy": {4180}}
# The capabilities an image's entrypoint needs to hand its files to its own user and drop to it.
ENTRYPOINT_CAPABILITIES = {
    "rabbitmq": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"},
    "postgres": {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"},
    "redis": {"CHOWN", "SETGID", "SETUID"},
    "order_gateway": {"CHOWN", "SETGID", "SETUID"},
}
# Root file systems left writable, and why: the broker's and the database's entrypoints write
# their configuration and run files outside their volumes.
WRITABLE_ROOT = {"rabbitmq", "postgres"}


@pytest.fixture(scope="module", params=["single broker", "cluster", "sign-in gateway"])
def deployment(request: pytest.FixtureRequest) -> dict[str, Any]:
    files = {"single broker": BASE, "cluster": CLUSTER, "sign-in gateway": GATEWAY}[request.param]
    return resolved(files, environ=SIGN_IN if files == GATEWAY else None)


def test_only_the_doors_are_published_on_every_interface(deployment: dict[str, Any]) -> None:
    for name, service in deployment["services"].items():
        for address, host_port, _ in ports(service):
            if host_port not in PUBLIC_DOORS.get(name, set()):
                assert address == "127.0.0.1", f"{name} publishes {host_port} beyond this host"


def test_every_container_drops_its_capabilities_and_privileges_and_has_a_memory_limit(
        deployment: dict[str, Any]) -> None:
    for name, service in deployment["services"].items():
        assert service.get("cap_drop") == ["ALL"], name
        node = "rabbitmq" if name.startswith("rabbitmq") and name != "rabbitmq_identities" else name
        assert set(service.get("cap_add", [])) <= ENTRYPOINT_CAPABILITIES.get(node, set()), name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("mem_limit"), f"{name} has no memory limit"
        if node not in WRITABLE_ROOT:
            assert service.get("read_only") is True, f"{name}'s root file system is writable"


def test_grafana_shows_nothing_without_a_login(compose: dict[str, Any]) -> None:
    environment = compose["services"]["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert environment["GF_USERS_ALLOW_SIGN_UP"] == "false"


@pytest.mark.parametrize(("files", "secret"), [
    *((BASE, secret) for secret in SECRETS if secret != "RABBITMQ_ERLANG_COOKIE"),  # no cluster
    *((CLUSTER, secret) for secret in SECRETS)])
def test_compose_refuses_to_start_without_each_secret(files: tuple[str, ...], secret: str) -> None:
    environ = {key: value for key, value in OTHER_CREDENTIALS.items() if key != secret}
    result = docker_compose("config", "-q", files=files, environ=environ)
    assert result.returncode != 0
    assert f"set {secret} in .env (see .env.example)" in result.stderr
