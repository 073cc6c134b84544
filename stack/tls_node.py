"""One local RabbitMQ node with TLS listeners, for the tests of AMQP over TLS.

Started and removed like the nodes of `stack.cluster` (its own node name, ports and directory,
owned by the `rabbitmq` user), never touching the machine's own node. Beside its plain listener
it has a TLS listener on 127.0.0.1 and on 127.0.0.2 (the same port): the server certificate names
127.0.0.1 and localhost only, so a client dialling 127.0.0.2 meets a certificate that is not for
the host it asked for. The node asks clients for a certificate and verifies one if given (against
the same CA), but does not require it.
"""
from __future__ import annotations

import os
import pwd
import shutil
from pathlib import Path

from stack.certificates import Issued
from stack.cluster import LocalCluster, Node
from stack.processes import free_port

OTHER_LOOPBACK = "127.0.0.2"


class LocalTlsNode(LocalCluster):
    """A cluster of one node serving AMQP over TLS with `server`'s certificate; `close()` removes it."""

    def __init__(self, ca_file: Path, server: Issued) -> None:
        super().__init__(size=1)
        self.node = self.nodes[0]
        self.tls_port = free_port()
        self._files = {"cacertfile": ca_file, "certfile": server.cert_file, "keyfile": server.key_file}

    @property
    def tls_address(self) -> str:
        """RABBITMQ_HOST for a service speaking TLS to this node."""
        return f"127.0.0.1:{self.tls_port}"

    def _prepare(self, node: Node, owner: pwd.struct_passwd) -> None:
        tls = node.home / "tls"
        tls.mkdir(parents=True, exist_ok=True)
        lines = [f"listeners.ssl.1 = 127.0.0.1:{self.tls_port}",
                 f"listeners.ssl.2 = {OTHER_LOOPBACK}:{self.tls_port}",
                 "ssl_options.verify = verify_peer", "ssl_options.fail_if_no_peer_cert = false"]
        for key, source in self._files.items():
            copy = tls / Path(source).name
            shutil.copyfile(source, copy)
            os.chmod(copy, 0o600)
            lines.append(f"ssl_options.{key} = {copy}")
        super()._prepare(node, owner)  # writes the plain listener's configuration, chowns the tree
        with (node.home / "rabbitmq.conf").open("a") as conf:
            conf.write("\n".join(lines) + "\n")
