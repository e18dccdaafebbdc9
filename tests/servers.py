"""Throwaway real servers for tests and benchmarks: MariaDB and the Firestore emulator.

Each starts once, on a free loopback port, with its data in a temporary folder.
Nothing here mocks anything.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pymysql

from core.emulator import Emulator, free_port, stop_group

MARIADB_INSTALL_HINT = "install it: apt-get install mariadb-server (the tests start their own server)"
USER, PASSWORD = "empsync", "s3cret-test-pw"


class ServerMissing(RuntimeError):
    pass


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or next(
            (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
        )
        if found:
            return found
    raise ServerMissing(f"{names[0]} not found: {MARIADB_INSTALL_HINT}")


class MariaDB:
    """A private mariadbd with its own data folder, socket and port."""

    def __init__(self, base: Path | None = None, port: int | None = None) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="empsync-mariadb-"))
        self.datadir = self.base / "data"
        self.socket = self.base / "mysqld.sock"
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    def url(self, database: str, password: str = PASSWORD, user: str = USER) -> str:
        return f"mysql+pymysql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> MariaDB:
        mariadbd = _binary("mariadbd", "mysqld")
        first = not self.datadir.exists()
        if first:
            install = _binary("mariadb-install-db", "mysql_install_db")
            args = [
                install,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]
            if os.geteuid() == 0:
                args.append("--user=root")
            subprocess.run(args, check=True, capture_output=True, timeout=120)
        args = [
            mariadbd,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={self.base / 'mysqld.pid'}",
            f"--log-error={self.base / 'error.log'}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=256M",
            "--innodb-log-file-size=256M",
            "--max-connections=500",
            "--skip-name-resolve",
            f"--tmpdir={self.base}",  # temp tables in its own folder: other servers' clean-ups cannot touch them
        ]
        if os.geteuid() == 0:
            args.append("--user=root")
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.base / "error.log").read_text(errors="replace")[-2000:]
                raise ServerMissing(f"mariadbd exited at start:\n{log}")
            try:
                conn = self.root()
                break
            except pymysql.err.OperationalError:
                time.sleep(0.1)
        else:
            raise ServerMissing(f"mariadbd did not start within {timeout:.0f} s")
        if first:
            with conn.cursor() as c:
                c.execute(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'")
                c.execute(f"GRANT ALL ON *.* TO '{USER}'@'%'")
        conn.close()
        return self

    def root(self) -> pymysql.connections.Connection:
        return pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True, connect_timeout=2)

    def create_database(self, name: str) -> str:
        conn = self.root()
        with conn.cursor() as c:
            c.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
        conn.close()
        return name

    def query(self, sql: str, *args) -> list[tuple]:
        conn = self.root()
        try:
            with conn.cursor() as c:
                c.execute(sql, args or None)
                return list(c.fetchall())
        finally:
            conn.close()

    def stop(self, kill: bool = False) -> None:
        if self.process is not None:
            stop_group(self.process, kill=kill, timeout=60)
            self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def start_emulator(log_dir: Path | None = None) -> Emulator:
    log_path = (log_dir or Path(tempfile.mkdtemp(prefix="empsync-emulator-"))) / "emulator.log"
    return Emulator(log_path=log_path).start()


def export_emulator(host: str, project: str, folder: Path) -> str:
    """The emulator's own export of a project; returns the metadata file ``--import-data`` takes."""
    folder.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"database": f"projects/{project}/databases/(default)", "export_directory": str(folder)})
    request = urllib.request.Request(
        f"http://{host}/emulator/v1/projects/{project}:export",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=60).close()
    (metadata,) = glob.glob(str(folder / "**" / "*.overall_export_metadata"), recursive=True)
    return metadata
