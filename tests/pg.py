"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, a data folder in a temp dir,
a free port on loopback, trust authentication, the "C" locale; stopped (immediate) at the end.

    cluster = PostgresCluster.start(Path("/tmp/x"))
    url = cluster.new_database()          # postgresql://postgres@127.0.0.1:PORT/t_1, empty
    cluster.stop()

initdb refuses to run as root: as root the server runs as the `postgres` user (which Debian's
package creates), in a folder it owns. Errors name the step and show the server's log.
"""
from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
from pathlib import Path

from bench.procs import free_port


def server_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin "
                           "(scripts/setup.sh installs the postgresql package)")
    return Path(found[-1]).parent


class PostgresCluster:
    def __init__(self, root: Path, port: int):
        self.root, self.port = root, port
        self.data = root / "data"
        self._names = itertools.count(1)

    @classmethod
    def start(cls, root: Path, settings: dict[str, str] | None = None) -> "PostgresCluster":
        root.mkdir(parents=True, exist_ok=True)
        cluster = cls(root, free_port())
        as_user = []
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        cluster._as_user = as_user
        binaries = server_bin()
        cluster._run(as_user + [str(binaries / "initdb"), "-D", str(cluster.data), "-U", "postgres", "--no-locale",
                                "-E", "UTF8", "-A", "trust", "--no-sync"], "initdb")
        options = {"listen_addresses": "127.0.0.1", "port": str(cluster.port), "unix_socket_directories": str(root),
                   "max_connections": "300", "shared_buffers": "64MB", "fsync": "on", "synchronous_commit": "on",
                   "log_min_messages": "warning", **(settings or {})}
        with open(cluster.data / "postgresql.auto.conf", "a") as conf:
            for key, value in options.items():
                conf.write(f"{key} = '{value}'\n")
        cluster._run(as_user + [str(binaries / "pg_ctl"), "-D", str(cluster.data), "-l", str(root / "server.log"),
                                "-w", "-t", "60", "start"], "pg_ctl start")
        return cluster

    def _run(self, argv: list[str], step: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = (self.root / "server.log").read_text()[-2000:] if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"PostgreSQL {step} failed ({result.returncode}): {result.stderr.strip()}\n{log}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg
        name = f"t_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        subprocess.run(self._as_user + [str(server_bin() / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                        "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)
