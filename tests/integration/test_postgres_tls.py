"""A store on PostgreSQL over TLS, through DATABASE_URL's libpq parameters (sslmode, sslrootcert).

The server is one of the module's own (`stack.private_postgres`: initdb and pg_ctl in a temporary
directory, a free port, about 2 s), with `ssl = on`, a certificate from the test's CA and a
pg_hba.conf that admits TCP clients over TLS only; the shared server on 5432 is not touched.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from messaging.settings import ConfigError, StorageSettings
from order_service.store import OrderStore
from stack.certificates import Authority
from stack.private_postgres import PrivatePostgres, binaries


class Pki:
    def __init__(self, ca: Authority, unrelated: Authority) -> None:
        self.ca, self.unrelated = ca, unrelated


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pg-pki")
    return Pki(Authority("pg-test", directory), Authority("unrelated", directory))


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[PrivatePostgres]:
    bin_dir = binaries()
    if bin_dir is None or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL's initdb and pg_ctl, run as root (to start them as postgres)")
    server = PrivatePostgres(pki.ca.issue("pg-server", ("127.0.0.1", "localhost")), bin_dir)
    try:
        yield server.start()
    finally:
        server.close()


def open_store(url: str) -> OrderStore:
    return OrderStore.open(StorageSettings(database_url=url))


def test_a_store_with_sslmode_verify_full_and_the_ca_connects_over_tls(server, pki):
    store = open_store(server.url(sslmode="verify-full", sslrootcert=str(pki.ca.ca_file)))
    try:
        row = store.db.conn.execute(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row[0] is True and row[1].startswith("TLS")
    finally:
        store.close()


def test_a_server_certificate_from_another_ca_is_refused_with_one_clear_error(server, pki):
    with pytest.raises(ConfigError) as refused:
        open_store(server.url(sslmode="verify-full", sslrootcert=str(pki.unrelated.ca_file)))
    assert str(refused.value).startswith(f"DATABASE_URL {server.url(sslmode='verify-full')}")
    assert "SSL error: certificate verify failed" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_clear_text_connection_is_refused_by_a_hostssl_only_server(server):
    with pytest.raises(ConfigError, match="no pg_hba.conf entry for host .* no encryption"):
        open_store(server.url(sslmode="disable"))
