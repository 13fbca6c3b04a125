"""A throwaway PostgreSQL cluster on loopback, for the tests and the storage benchmark.

initdb + pg_ctl in a temp folder (as the `postgres` user when run as root), listening on
127.0.0.1 only, trust authentication for the user `vicreg`. Needs Debian's `postgresql`
package, which `make test` installs when missing (scripts/ensure_postgres.sh).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(f"{folder}/{name}"):
            return f"{folder}/{name}"
    return None


class Postgres:
    """A PostgreSQL cluster in a temp folder, listening on 127.0.0.1 only, trust auth for user vicreg."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vicreg-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *cmd: str) -> None:
        out = subprocess.run([*self.as_postgres, *cmd], capture_output=True, text=True, timeout=120)
        if out.returncode:
            raise RuntimeError(f"{Path(cmd[0]).name} failed: {(out.stderr or out.stdout).strip()[:300]}")

    def start(self) -> None:
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        if not self.data.exists():
            self._run(_bin("initdb"), "-D", str(self.data), "-U", "vicreg", "--auth=trust", "-E", "UTF8")
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def createdb(self, name: str) -> str:
        self._run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "vicreg", name)
        return f"postgresql://vicreg@127.0.0.1:{self.port}/{name}"


    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> Postgres:
    """A started server; RuntimeError (or OSError) saying why when it cannot start."""
    missing = [n for n in ("initdb", "pg_ctl", "createdb") if _bin(n) is None]
    if missing:
        raise RuntimeError(f"PostgreSQL binaries not found ({', '.join(missing)}); install package postgresql")
    server = Postgres()
    server.start()
    return server
