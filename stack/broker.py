"""A private RabbitMQ vhost for one run, created and removed through the management HTTP API."""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pika
import requests

from messaging.settings import BrokerSettings
from ops.identities import SERVICES, Management, provision


class Broker:
    """The local RabbitMQ, seen through its management API and AMQP."""

    def __init__(self, host: str | None = None, port: int = 5672, api_port: int = 15672,
                 user: str = "guest", password: str = "guest") -> None:
        self.host = host or os.environ.get("RABBITMQ_HOST", "127.0.0.1")
        self.port, self.user, self.password = port, user, password
        self.api = f"http://{self.host}:{api_port}/api"
        self._http = requests.Session()
        self._http.auth = (user, password)

    def create_vhost(self, prefix: str = "test", name: str | None = None) -> str:
        """Create an empty vhost (`name`, or a fresh one) with full permissions for our user;
        return its name."""
        name = name or f"{prefix}-{uuid.uuid4().hex[:10]}"
        self._http.put(f"{self.api}/vhosts/{quote(name, safe='')}", timeout=10).raise_for_status()
        self._http.put(f"{self.api}/permissions/{quote(name, safe='')}/{self.user}",
                       json={"configure": ".*", "write": ".*", "read": ".*"},
                       timeout=10).raise_for_status()
        return name

    def create_identities(self, vhost: str) -> dict[str, tuple[str, str]]:
        """A broker user of its own for each service (fresh names: users are not per vhost), with
        the rights of its part of the topology in `vhost`; service -> (user, password). Delete
        them with `delete_users`."""
        tag = uuid.uuid4().hex[:8]
        users = {service: (f"{service}-{tag}", uuid.uuid4().hex) for service in SERVICES}
        provision(Management(self.api, self.user, self.password), vhost, users)
        return users

    def delete_users(self, *names: str) -> None:
        """Delete these users (missing is fine)."""
        management = Management(self.api, self.user, self.password)
        for name in names:
            management.delete_user(name)

    def connections_of(self, user: str) -> list[str]:
        """The names of the connections `user` has open, as the management API lists them."""
        response = self._http.get(f"{self.api}/connections", timeout=10)
        response.raise_for_status()
        return [c["name"] for c in response.json() if c.get("user") == user]

    def close_connection(self, name: str) -> None:
        """Close one client connection (as an operator would in the management UI)."""
        response = self._http.delete(f"{self.api}/connections/{quote(name, safe='')}", timeout=10)
        if response.status_code not in (204, 404):
            response.raise_for_status()

    def limit_connections(self, vhost: str, limit: int | None) -> None:
        """Allow at most `limit` connections into `vhost` (0: none get in); None lifts the limit."""
        url = f"{self.api}/vhost-limits/{quote(vhost, safe='')}/max-connections"
        if limit is None:
            self._http.delete(url, timeout=10).raise_for_status()
        else:
            self._http.put(url, json={"value": limit}, timeout=10).raise_for_status()

    def delete_vhost(self, name: str) -> None:
        """Delete a vhost and everything in it (missing is fine)."""
        response = self._http.delete(f"{self.api}/vhosts/{quote(name, safe='')}", timeout=30)
        if response.status_code not in (204, 404):
            response.raise_for_status()

    def vhosts(self) -> list[str]:
        """Names of all vhosts."""
        response = self._http.get(f"{self.api}/vhosts", timeout=10)
        response.raise_for_status()
        return [v["name"] for v in response.json()]

    def settings(self, vhost: str) -> BrokerSettings:
        """Connection settings for a service in `vhost`."""
        return BrokerSettings(host=self.host, port=self.port, user=self.user,
                              password=self.password, vhost=vhost)

    @contextlib.contextmanager
    def channel(self, vhost: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
        """A short-lived AMQP channel in `vhost`."""
        connection = pika.BlockingConnection(self.settings(vhost).parameters())
        try:
            yield connection.channel()
        finally:
            if connection.is_open:
                connection.close()

    def depth(self, vhost: str, queue: str) -> int:
        """Messages ready in `queue` right now (exact, not the API's sampled figure)."""
        with self.channel(vhost) as channel:
            return channel.queue_declare(queue=queue, passive=True).method.message_count

    def consumers(self, vhost: str, queue: str) -> int:
        """Consumers on `queue` right now (exact)."""
        with self.channel(vhost) as channel:
            return channel.queue_declare(queue=queue, passive=True).method.consumer_count

    def queue(self, vhost: str, queue: str) -> dict:
        """A queue as the broker's management API reports it: `durable`, `auto_delete`, `exclusive`,
        `arguments`, `consumers`, ...

        Its message figures (`messages`, `messages_ready`, `messages_unacknowledged`) are sampled
        (every 5 s by default) and absent until the first sample; `depth` is exact.
        """
        response = self._http.get(f"{self.api}/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}",
                                  timeout=10)
        response.raise_for_status()
        return response.json()

    def queue_names(self, vhost: str) -> set[str]:
        """Names of every queue in `vhost`, as the management API lists them."""
        response = self._http.get(f"{self.api}/queues/{quote(vhost, safe='')}", timeout=10)
        response.raise_for_status()
        return {q["name"] for q in response.json()}

    def set_policy(self, vhost: str, name: str, pattern: str, definition: dict,
                   apply_to: str = "queues", priority: int = 0) -> None:
        """Create or replace policy `name` in `vhost` (only that vhost is affected)."""
        self._http.put(f"{self.api}/policies/{quote(vhost, safe='')}/{quote(name, safe='')}",
                       json={"pattern": pattern, "definition": definition, "apply-to": apply_to,
                             "priority": priority}, timeout=10).raise_for_status()

    def clear_policy(self, vhost: str, name: str) -> None:
        """Remove policy `name` from `vhost` (missing is fine)."""
        response = self._http.delete(
            f"{self.api}/policies/{quote(vhost, safe='')}/{quote(name, safe='')}", timeout=10)
        if response.status_code not in (204, 404):
            response.raise_for_status()

    def bindings(self, vhost: str, exchange: str, queue: str) -> list[dict]:
        """The bindings from `exchange` to `queue`, as the management API lists them."""
        response = self._http.get(f"{self.api}/bindings/{quote(vhost, safe='')}/e/"
                                  f"{quote(exchange, safe='')}/q/{quote(queue, safe='')}", timeout=10)
        response.raise_for_status()
        return response.json()

    def bind(self, vhost: str, exchange: str, queue: str, routing_key: str) -> None:
        """Bind `queue` to `exchange` with `routing_key` (already bound is fine)."""
        self._http.post(f"{self.api}/bindings/{quote(vhost, safe='')}/e/{quote(exchange, safe='')}/"
                        f"q/{quote(queue, safe='')}", json={"routing_key": routing_key},
                        timeout=10).raise_for_status()

    def unbind(self, vhost: str, exchange: str, queue: str, routing_key: str) -> None:
        """Remove every binding from `exchange` to `queue` with `routing_key` (none is fine)."""
        for binding in self.bindings(vhost, exchange, queue):
            if binding["routing_key"] != routing_key:
                continue
            response = self._http.delete(
                f"{self.api}/bindings/{quote(vhost, safe='')}/e/{quote(exchange, safe='')}/"
                f"q/{quote(queue, safe='')}/{quote(binding['properties_key'], safe='')}", timeout=10)
            if response.status_code not in (204, 404):
                response.raise_for_status()
