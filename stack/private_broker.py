"""A RabbitMQ node of a test session's own, for scenarios that stop the broker or raise its alarms.

The machine's node on 5672 is shared: by the other tests of a parallel run, and by whoever else
uses the machine. Stopping its application or raising its memory alarm would break them all. This
node is started like `stack.plugin_node`'s (its own node name, ports and directory), with the
management plugin on a port of its own, so that the `Broker` helper works against it unchanged.
"""
from __future__ import annotations

import time

import requests

from stack.broker import Broker
from stack.plugin_node import LocalPluginNode

API_TIMEOUT = 60


class PrivateBroker(Broker):
    """`Broker` for a one-node RabbitMQ of its own; `close()` stops the node and removes its files."""

    def __init__(self, local: LocalPluginNode) -> None:
        super().__init__(host="127.0.0.1", port=local.node.port, api_port=local.management_port)
        self.local = local
        self.node = local.node

    @classmethod
    def start(cls) -> PrivateBroker:
        """Boot the node with the management plugin; return once its HTTP API answers."""
        local = LocalPluginNode("rabbitmq_management")
        try:
            local.start()
            broker = cls(local)
            broker._await_api()
        except BaseException:
            local.close()
            raise
        return broker

    @property
    def address(self) -> str:
        """RABBITMQ_HOST for services that use this node."""
        return self.node.address

    def _await_api(self) -> None:
        deadline = time.monotonic() + API_TIMEOUT
        while True:
            try:
                self.vhosts()
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop_app(self) -> None:
        """Stop the RabbitMQ application (the Erlang VM keeps running)."""
        self.node.stop_app()

    def start_app(self) -> None:
        """Start the application again and wait until it has booted."""
        self.node.start_app()

    def memory_watermark(self) -> str:
        """The memory high watermark as `rabbitmqctl` reads it back."""
        return self.node.ctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").stdout.strip()

    def set_memory_watermark(self, value: str) -> None:
        """Set the memory high watermark (0 raises the memory alarm at once)."""
        self.node.ctl("set_vm_memory_high_watermark", value)

    def close(self) -> None:
        self.local.close()
