"""Which node a connection tries first: after a connect, the next one in RABBITMQ_HOST."""
from __future__ import annotations

from messaging.amqp.connection import NodeRotation
from messaging.settings import BrokerSettings


def test_one_node_is_always_first():
    nodes = NodeRotation(BrokerSettings(host="a"))
    assert nodes.order() == [0]
    nodes.connected(0)
    assert nodes.order() == [0]


def test_after_a_connect_the_other_nodes_come_first():
    nodes = NodeRotation(BrokerSettings(host="a,b,c"))
    assert nodes.order() == [0, 1, 2]
    nodes.connected(0)
    assert (nodes.current, nodes.order()) == (0, [1, 2, 0])
    nodes.connected(2)  # b was down too
    assert (nodes.current, nodes.order()) == (2, [0, 1, 2])
