"""Give each service a broker user of its own, with exactly the rights its part of the topology
needs: `python -m ops.identities` (Compose runs it once, before the services start).

It logs in to RabbitMQ's management API (port RABBITMQ_MANAGEMENT_PORT of the first RABBITMQ_HOST)
as the operator (RABBITMQ_USER, RABBITMQ_PASSWORD) and, in RABBITMQ_VHOST, creates or updates the
users ORDER_SERVICE_RABBITMQ_USER, INVENTORY_SERVICE_RABBITMQ_USER and
NOTIFICATION_SERVICE_RABBITMQ_USER (each with its `..._PASSWORD`, required), no tags, and the
permissions and topic permissions `messaging.topology.rights` derives from the topology. It then
adds the `impersonator` tag to the operator, so that `ops.dlq replay` may publish a dead letter
again as the service that first sent it. Running it again sets everything again (idempotent).
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from urllib.parse import quote

import requests

from messaging import topology
from messaging.settings import ConfigError, broker_settings, env_int

SERVICES = (topology.ORDER_SERVICE, topology.INVENTORY_SERVICE, topology.NOTIFICATION_SERVICE)
IMPERSONATOR = "impersonator"
READY_TIMEOUT = 60.0  # seconds to wait for the management API


class Management:
    """The broker's management HTTP API, as one user."""

    def __init__(self, api: str, user: str, password: str) -> None:
        self.api, self.user = api, user
        self._http = requests.Session()
        self._http.auth = (user, password)

    def _put(self, path: str, body: dict) -> None:
        self._http.put(f"{self.api}/{path}", json=body, timeout=10).raise_for_status()

    def put_user(self, name: str, password: str, tags: str = "") -> None:
        """Create user `name`, or set its password and tags."""
        self._put(f"users/{quote(name, safe='')}", {"password": password, "tags": tags})

    def delete_user(self, name: str) -> None:
        """Delete user `name` (missing is fine)."""
        response = self._http.delete(f"{self.api}/users/{quote(name, safe='')}", timeout=10)
        if response.status_code not in (204, 404):
            response.raise_for_status()

    def grant(self, vhost: str, name: str, rights: topology.Rights) -> None:
        """Give user `name` exactly `rights` in `vhost`."""
        where = f"{quote(vhost, safe='')}/{quote(name, safe='')}"
        self._put(f"permissions/{where}", {"configure": rights.configure, "write": rights.write,
                                           "read": rights.read})
        for exchange, keys in rights.topics:
            self._put(f"topic-permissions/{where}", {"exchange": exchange, "write": keys, "read": keys})

    def add_tag(self, name: str, tag: str) -> None:
        """Add `tag` to user `name`, keeping its password and other tags."""
        response = self._http.get(f"{self.api}/users/{quote(name, safe='')}", timeout=10)
        response.raise_for_status()
        user = response.json()
        tags = user["tags"] if isinstance(user["tags"], list) else user["tags"].split(",")
        if tag not in tags:
            self._put(f"users/{quote(name, safe='')}", {
                "password_hash": user["password_hash"], "hashing_algorithm": user["hashing_algorithm"],
                "tags": ",".join([t for t in tags if t] + [tag])})


def provision(management: Management, vhost: str, users: Mapping[str, tuple[str, str]]) -> None:
    """Create each service's user (service -> (user, password)) with the rights of its part."""
    for service, (user, password) in users.items():
        management.put_user(user, password)
        management.grant(vhost, user, topology.rights(service))


def service_users(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """service -> (user, password) from <SERVICE>_SERVICE_RABBITMQ_USER and ..._PASSWORD."""
    users = {
        topology.ORDER_SERVICE: (env.get("ORDER_SERVICE_RABBITMQ_USER") or "order_service",
                                 env.get("ORDER_SERVICE_RABBITMQ_PASSWORD") or ""),
        topology.INVENTORY_SERVICE: (env.get("INVENTORY_SERVICE_RABBITMQ_USER") or "inventory_service",
                                     env.get("INVENTORY_SERVICE_RABBITMQ_PASSWORD") or ""),
        topology.NOTIFICATION_SERVICE: (
            env.get("NOTIFICATION_SERVICE_RABBITMQ_USER") or "notification_service",
            env.get("NOTIFICATION_SERVICE_RABBITMQ_PASSWORD") or ""),
    }
    for service, (_, password) in users.items():
        if not password:
            raise ConfigError(f"{service.upper()}_SERVICE_RABBITMQ_PASSWORD must be set")
    return users


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        broker, users = broker_settings(env), service_users(env)
        port = env_int(env, "RABBITMQ_MANAGEMENT_PORT", 15672, 1, 65535)
    except ConfigError as exc:
        print(f"identities: configuration error: {exc}", file=sys.stderr)
        return 2
    host = broker.nodes[0][0]
    management = Management(f"http://{host}:{port}/api", broker.user, broker.password)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:  # the management API may answer a little after the broker's health check passes
        try:
            provision(management, broker.vhost, users)
            break
        except requests.ConnectionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)
    management.add_tag(broker.user, IMPERSONATOR)
    for service, (user, _) in users.items():
        print(f"identities: {user} ({service}) in vhost {broker.vhost}: {topology.rights(service)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
