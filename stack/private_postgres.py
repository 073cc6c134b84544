"""A PostgreSQL server of a test's own, with TLS, never touching the machine's server on 5432.

`initdb` makes a fresh cluster in a temporary directory owned by the `postgres` user, and `pg_ctl`
starts it on a free port of 127.0.0.1 (its socket in that directory too), with `ssl = on`, the
given server certificate and a `pg_hba.conf` that admits TCP clients only over TLS (`hostssl`,
trust). `close()` stops it (immediate mode) and removes the directory.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from stack.certificates import Issued
from stack.processes import free_port

TIMEOUT = 60


def binaries() -> Path | None:
    """The directory of the newest installed `initdb` and `pg_ctl`, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """One TLS-only PostgreSQL server on 127.0.0.1:`port`, superuser `postgres`, no password."""

    def __init__(self, server: Issued, bin_dir: Path) -> None:
        self.bin_dir, self.port = bin_dir, free_port()
        self.home = Path(tempfile.mkdtemp(prefix="pg-tls-"))
        self.data = self.home / "data"
        self._files = server
        self._started = False

    def url(self, **params: str) -> str:
        query = "&".join(f"{key}={value}" for key, value in params.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres" + (f"?{query}" if query else "")

    def start(self) -> PrivatePostgres:
        owner = pwd.getpwnam("postgres")
        os.chmod(self.home, 0o755)
        os.chown(self.home, owner.pw_uid, owner.pw_gid)
        self._as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
                          "--encoding=UTF8", "--locale=C")  # the stores refuse a SQL_ASCII database
        for name, source in (("server.crt", self._files.cert_file), ("server.key", self._files.key_file)):
            shutil.copyfile(source, self.data / name)
            os.chmod(self.data / name, 0o600)  # PostgreSQL refuses a key others can read
            os.chown(self.data / name, owner.pw_uid, owner.pw_gid)
        (self.data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
        options = (f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c ssl=on "
                   "-c ssl_cert_file=server.crt -c ssl_key_file=server.key -c fsync=off")
        self._as_postgres("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.home / "log"),
                          "-w", "-t", str(TIMEOUT), "start")
        self._started = True
        return self

    def _as_postgres(self, program: str, *args: str) -> None:
        result = subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin_dir / program), *args],
                                capture_output=True, text=True, timeout=TIMEOUT, cwd=self.home)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed: {result.stdout}{result.stderr}")

    def close(self) -> None:
        """Stop the server (if started) and remove its directory."""
        try:
            if self._started:
                self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            self._started = False
            shutil.rmtree(self.home, ignore_errors=True)
