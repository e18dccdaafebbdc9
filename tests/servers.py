"""Throwaway real servers for tests and benchmarks: MariaDB, PostgreSQL and the Firestore emulator.

Each starts once, on a free loopback port, with its data in a temporary folder.
Nothing here mocks anything.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pymysql

from core.emulator import Emulator, free_port, stop_group

MARIADB_INSTALL_HINT = "install it: apt-get install mariadb-server (the tests start their own server)"
POSTGRES_INSTALL_HINT = "install it: apt-get install postgresql (the tests start their own server)"
USER, PASSWORD = "empsync", "s3cret-test-pw"


class ServerMissing(RuntimeError):
    pass


def _binary(*names: str, hint: str = MARIADB_INSTALL_HINT, also: tuple[str, ...] = ()) -> str:
    for name in names:
        places = (f"/usr/sbin/{name}", f"/usr/bin/{name}", *(f"{folder}/{name}" for folder in also))
        found = shutil.which(name) or next((p for p in places if os.path.exists(p)), None)
        if found:
            return found
    raise ServerMissing(f"{names[0]} not found: {hint}")


def _run_setup(args: list[str], cwd: Path | None = None) -> None:
    """A server's set-up step (mariadb-install-db, initdb); a failure says what the tool said."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()[-1500:]
        raise ServerMissing(f"{Path(args[0]).name} exited {done.returncode}: {said}")


class MariaDB:
    """A private mariadbd with its own data folder, socket and port."""

    def __init__(self, base: Path | None = None, port: int | None = None, settings: tuple[str, ...] = ()) -> None:
        self.base = Path(base or tempfile.mkdtemp(prefix="empsync-mariadb-"))
        self.datadir = self.base / "data"
        self.socket = self.base / "mysqld.sock"
        self.port = port or free_port()
        self.settings = settings  # extra server options, like --max-allowed-packet=256K
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
            _run_setup(args)
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
            *self.settings,
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

    def steal_lock(self, lock) -> pymysql.connections.Connection:
        """Cut the connection holding empsync's GET_LOCK and take the lock; close the result to give it back."""
        holder = self.query("SELECT IS_USED_LOCK(%s)", lock.name)[0][0]
        assert holder is not None, "nobody holds the lock"
        conn = self.root()
        with conn.cursor() as c:
            c.execute(f"KILL {int(holder)}")
            c.execute("SELECT GET_LOCK(%s, 10)", (lock.name,))
            assert c.fetchone()[0] == 1
        return conn


class PostgreSQL:
    """A private postgres with its own data folder, unix socket and loopback port.

    postgres refuses to run as root, so as root it runs as the ``postgres``
    user Debian's package creates (else ``nobody``), in a folder of its own
    under the system's temporary directory that that user owns. The
    superuser connects over the socket (trust); the test user connects
    over TCP with a password (SCRAM), as empsync would.
    """

    ADMIN = "postgres"

    def __init__(self, base: Path | None = None, port: int | None = None, settings: tuple[str, ...] = ()) -> None:
        self.run_as = _unprivileged_user() if os.geteuid() == 0 else None
        self.base = Path(base) if base and self.run_as is None else Path(tempfile.mkdtemp(prefix="empsync-postgres-"))
        self.base.mkdir(parents=True, exist_ok=True)
        self.datadir = self.base / "data"
        self.port = port or free_port()
        self.settings = settings  # extra server settings, like "fsync=off"
        self.process: subprocess.Popen | None = None

    def url(self, database: str, password: str = PASSWORD, user: str = USER) -> str:
        return f"postgresql+psycopg://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def _as_user(self, command: list[str]) -> list[str]:
        """The command, run as the unprivileged user when we are root.

        Through setpriv rather than Popen(user=...): changing user makes
        Python fork instead of vfork, and a fork runs gRPC's fork handlers,
        which crash the child while the emulator's client streams.
        """
        if self.run_as is None:
            return command
        user = str(self.run_as.pw_uid), str(self.run_as.pw_gid)
        return [
            _binary("setpriv", hint="it comes with util-linux"),
            f"--reuid={user[0]}",
            f"--regid={user[1]}",
            "--clear-groups",
            *command,
        ]

    def start(self, timeout: float = 60.0) -> PostgreSQL:
        try:
            import psycopg  # noqa: F401 - the driver the tests connect with
        except ImportError as exc:
            raise ServerMissing(f"psycopg is not installed ({exc}): pip install -e '.[test]'") from None
        # Debian keeps them out of PATH, one folder per major version: the newest first.
        versions = tuple(sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major_version, reverse=True))
        initdb = _binary("initdb", hint=POSTGRES_INSTALL_HINT, also=versions)
        postgres = _binary("postgres", hint=POSTGRES_INSTALL_HINT, also=versions)
        if self.run_as is not None:
            os.chown(self.base, self.run_as.pw_uid, self.run_as.pw_gid)
        first = not self.datadir.exists()
        if first:
            _run_setup(
                self._as_user(
                    [
                        initdb,
                        f"--pgdata={self.datadir}",
                        f"--username={self.ADMIN}",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "--encoding=UTF8",
                        "--no-locale",
                        "--no-sync",
                    ]
                ),
                cwd=self.base,
            )
        args = [
            postgres,
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-k",
            str(self.base),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=300",
            "-c",
            f"log_directory={self.base}",
            "-c",
            "logging_collector=off",
            *(item for setting in self.settings for item in ("-c", setting)),
        ]
        log = open(self.base / "postgres.log", "ab")  # noqa: SIM115 - the server writes it while it runs
        self.process = subprocess.Popen(
            self._as_user(args), stdout=log, stderr=log, start_new_session=True, cwd=self.base
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                text = (self.base / "postgres.log").read_text(errors="replace")[-2000:]
                raise ServerMissing(f"postgres exited at start:\n{text}")
            try:
                conn = self.admin()
                break
            except Exception:  # noqa: BLE001 - psycopg.OperationalError while it starts
                time.sleep(0.1)
        else:
            raise ServerMissing(f"postgres did not start within {timeout:.0f} s")
        if first:
            conn.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        conn.close()
        return self

    def admin(self, database: str = "postgres"):
        """A superuser connection over the unix socket, in autocommit."""
        import psycopg

        return psycopg.connect(
            host=str(self.base), port=self.port, user=self.ADMIN, dbname=database, autocommit=True, connect_timeout=2
        )

    def create_database(self, name: str, owner: str = USER) -> str:
        """A new database the test user owns (and so may create tables in, in its public schema)."""
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return name

    def query(self, sql: str, *args, database: str = "postgres") -> list[tuple]:
        with self.admin(database) as conn:
            cursor = conn.execute(sql, args or None)
            return list(cursor.fetchall()) if cursor.description else []

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if not kill:
            # SIGINT is a fast shutdown; SIGTERM (a smart one) would wait for every client to leave.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        stop_group(self.process, kill=True, timeout=60)
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def steal_lock(self, lock):
        """Cut the connection holding empsync's advisory lock and take the lock; close the result to give it back."""
        database = lock.engine.url.database
        (holder,) = self.query(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND classid::bigint = %s AND objid::bigint = %s",
            lock.params["high"],
            lock.params["low"],
            database=database,
        )[0]
        conn = self.admin(database)
        conn.execute("SELECT pg_terminate_backend(%s)", (holder,))
        conn.execute("SET lock_timeout = '10s'")
        conn.execute("SELECT pg_advisory_lock(%s)", (lock.params["key"],))
        return conn


def _major_version(folder: str) -> int:
    name = Path(folder).parent.name
    return int(name) if name.isdigit() else 0


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerMissing("no unprivileged user to run postgres as (create one: useradd --system postgres)")


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
