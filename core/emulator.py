"""Starting and stopping the Firestore emulator of the Google Cloud CLI.

Used by ``empsync demo`` and by the tests. The emulator runs in its own
process group so that stopping it leaves no Java process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from .errors import EmpsyncError

INSTALL_HINT = (
    "install Java and the Google Cloud CLI's Firestore emulator: "
    "`gcloud components install cloud-firestore-emulator`, or on Debian/Ubuntu "
    "`apt-get install google-cloud-cli-firestore-emulator default-jre-headless`"
)


EMULATOR_MAIN = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the parent dies, even by kill -9 (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_group(process: subprocess.Popen, kill: bool = False, timeout: float = 10.0) -> None:
    """Stop a process started with start_new_session=True, and everything in its group."""
    try:
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    # A child (the JVM behind a wrapper script) may outlive the leader for a moment.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _sdk_roots() -> list[Path]:
    roots = []
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        roots.append(Path(os.environ["CLOUDSDK_ROOT_DIR"]))
    gcloud = shutil.which("gcloud")
    if gcloud:
        # bin/gcloud sits in the SDK root (often behind a symlink).
        roots.append(Path(os.path.realpath(gcloud)).parent.parent)
        try:
            out = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True, text=True, timeout=30, check=False,
            ).stdout.strip()  # fmt: skip
            if out:
                roots.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    roots += [Path("/usr/lib/google-cloud-sdk"), Path("/usr/share/google-cloud-sdk"), Path.home() / "google-cloud-sdk"]
    return roots


def emulator_command() -> list[str]:
    """The command that starts the emulator, or an error that says what to install."""
    override = os.environ.get("EMPSYNC_EMULATOR_CMD")
    if override:
        return override.split()
    if not shutil.which("java"):
        raise EmpsyncError("the Firestore emulator needs Java, which is not installed", INSTALL_HINT)
    for root in _sdk_roots():
        folder = root / "platform" / "cloud-firestore-emulator"
        jar = folder / "cloud-firestore-emulator.jar"
        if jar.is_file():
            # Java directly, as the SDK's wrapper script does, so that the
            # process we watch (and that dies with us) is the emulator itself.
            return ["java", "-Duser.language=en", "-cp", str(jar), EMULATOR_MAIN, "start"]
        if (folder / "cloud_firestore_emulator").is_file():
            return [str(folder / "cloud_firestore_emulator"), "start"]
    raise EmpsyncError("the Firestore emulator is not installed", INSTALL_HINT)


class Emulator:
    """One emulator process on a loopback port."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.bind = host
        self.die_with_parent = die_with_parent
        self.port = port or free_port(host)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"{self.bind}:{self.port}"

    def start(self, timeout: float = 60.0) -> Emulator:
        command = [*emulator_command(), "--host", self.bind, "--port", str(self.port)]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the process
        env = {**os.environ, "JAVA_TOOL_OPTIONS": os.environ.get("JAVA_TOOL_OPTIONS", "-Xss4m")}
        self.process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509 - only prctl, safe after fork
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmpsyncError(
                    f"the Firestore emulator exited at start (code {self.process.returncode})", INSTALL_HINT
                )
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise EmpsyncError(f"the Firestore emulator did not answer on {self.host} within {timeout:.0f} s")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}/", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.process is not None:
            stop_group(self.process, kill=kill)
            self.process = None
