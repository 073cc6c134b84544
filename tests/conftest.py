"""Shared fixtures: a private vhost per test, services started as real processes, polling waits.

Tests run side by side (pytest-xdist, see pytest.ini): each has its own vhost, ports and
directories. What cannot be shared is kept on one worker (`xdist_group`): the cluster tests' nodes,
the modules that stop the broker (on a node of their own), and modules with module-wide stacks.
"""
from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stack.broker import Broker  # noqa: E402
from stack.private_broker import PrivateBroker  # noqa: E402
from stack.processes import Stack  # noqa: E402
from tests import figures  # noqa: E402
from tests.client import wait_for  # noqa: E402,F401 - re-exported for tests
from tests.identity import IdentityProvider  # noqa: E402

UUID = re.compile(r"\w{8}-\w{4}-\w{4}-\w{4}-\w{12}")  # a UUID, or one made bad by a letter


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Ids without the fresh UUIDs some parameters carry, so that every collection (each xdist
    worker's) names the same tests; pytest numbers the ids this makes alike."""
    text = val.decode("ascii", "backslashreplace") if isinstance(val, bytes) else val
    if isinstance(text, str) and UUID.search(text):
        return UUID.sub("uuid", text)
    return None


def xdist_group_of(item: pytest.Item) -> str | None:
    """The worker group a test must share, if any: one per costly thing set up once and shared."""
    # The private node (one per session) and the clusters (three nodes per session) share one worker:
    # each scenario stops brokers, kills services and waits for recovery against deadlines, and the
    # two together on 2 cores starved a chaos scenario past its deadline. One after the other,
    # their recovery figures are also each their own.
    # The TLS tests' own node (tests/integration/test_amqp_tls.py) boots there too, not beside them.
    if (item.get_closest_marker("private_broker") or "cluster" in item.fixturenames
            or "tls_node" in item.fixturenames):
        return "fault_scenarios"
    definitions = getattr(item, "_fixtureinfo", None)
    shared = definitions and [name for name, defs in definitions.name2fixturedefs.items()
                              if defs[-1].scope == "module" and name != "broker"]
    return item.module.__name__ if shared else None  # e.g. the browser's stack and Chromium


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = xdist_group_of(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand the scenarios' figures to the controller
        workeroutput["figures"] = figures.as_json()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    figures.add_json(getattr(node, "workeroutput", {}).get("figures", {}))


def pytest_terminal_summary(terminalreporter) -> None:
    figures.report(terminalreporter)


@pytest.fixture(scope="session")
def shared_broker() -> Iterator[Broker]:
    """The local RabbitMQ; removes any vhost this session left behind."""
    broker = Broker()
    try:
        broker.vhosts()
    except requests.RequestException as exc:
        pytest.fail(f"RabbitMQ management API unreachable at {broker.api}: {exc}")
    created: list[str] = []
    original = broker.create_vhost

    def create(prefix: str = "test", name: str | None = None) -> str:
        name = original(prefix, name)
        created.append(name)
        return name

    broker.create_vhost = create  # type: ignore[method-assign]
    yield broker
    for name in created:
        broker.delete_vhost(name)


@pytest.fixture(scope="session")
def private_broker() -> Iterator[PrivateBroker]:
    """A RabbitMQ node of this session's own (management API included), stopped and removed after."""
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        pytest.fail("the tests that stop the broker start a RabbitMQ node of their own: "
                    "they need rabbitmq-server and rabbitmqctl (run as root or rabbitmq)")
    broker = PrivateBroker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="module")
def broker(request: pytest.FixtureRequest) -> Broker:
    """The broker a module's tests use: the local one, or for a module marked `private_broker`
    (it stops the broker or raises its alarms) a node of the session's own."""
    if request.node.get_closest_marker("private_broker"):
        return request.getfixturevalue("private_broker")
    return request.getfixturevalue("shared_broker")


@pytest.fixture
def vhost(broker: Broker) -> Iterator[str]:
    """A private, empty vhost for one test."""
    name = broker.create_vhost()
    yield name
    broker.delete_vhost(name)


@pytest.fixture
def make_stack(broker: Broker, vhost: str, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Factory: a Stack of real service processes in this test's vhost; all stopped afterwards.

    Its stores are on the backend TEST_BACKEND names (sqlite by default) unless `backend` is given.
    """
    stacks: list[Stack] = []

    def make(backend: str | None = None, service_env: dict[str, dict[str, str]] | None = None,
             **env: str) -> Stack:
        env = {"RABBITMQ_HOST": broker.host, "RABBITMQ_PORT": str(broker.port), **env}
        stack = Stack(vhost, tmp_path / f"stack{len(stacks)}", backend, service_env, **env)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """All three services running and healthy."""
    return make_stack().start()


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    """A sign-in provider of the tests' own (tests/identity.py) for the module: keys, JWKS, tokens."""
    provider = IdentityProvider()
    yield provider
    provider.close()
