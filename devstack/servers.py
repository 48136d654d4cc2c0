"""Start and stop the local servers (Azurite, the Cosmos DB-compatible server) from the project's node_modules.

Each server gets free ports unless told otherwise, waits until it accepts connections, and is stopped with its
whole process group, so tests and the demo never leave servers behind. The keys below are the public,
documented development keys of Azurite and of the Cosmos DB emulator; they protect nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
NODE_BIN: Final = ROOT / "node_modules" / ".bin"

# Public development keys (documented by Microsoft for Azurite and the Cosmos DB emulator).
AZURITE_ACCOUNT: Final = "devstoreaccount1"
AZURITE_KEY: Final = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
COSMOS_EMULATOR_KEY: Final = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="


class ServerError(RuntimeError):
    """A local server could not be started (missing install, port in use, crashed at start)."""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: every socket stays bound until all are picked, else the kernel may hand out the
    same ephemeral port twice (two Azurite services on one port: EADDRINUSE at start)."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        for _ in range(count):
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        return ports


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"{name} exited with {process.returncode} at start:\n{log.read_text()[-2000:]}")
        if port_in_use(port):
            return
        time.sleep(0.1)
    raise ServerError(f"{name} did not listen on {port} within {timeout}s:\n{log.read_text()[-2000:]}")


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def _spawn(name: str, argv: list[str], ports: list[int], workdir: Path) -> Server:
    binary = NODE_BIN / argv[0]
    if not binary.exists():
        raise ServerError(f"{binary} is missing: run `npm ci` (make setup does)")
    for port in ports:
        if port_in_use(port):
            raise ServerError(f"{name}: port {port} is already in use; stop what uses it or choose another port")
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - fixed binaries from our node_modules
            [str(binary), *argv[1:]], stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
        )
    server = Server(name, process, log)
    try:
        for port in ports:
            _wait_for_port(port, process, name, log)
    except BaseException:
        server.stop()
        raise
    return server


@dataclass(frozen=True)
class AzuriteEndpoints:
    blob_port: int
    queue_port: int
    table_port: int
    host: str = "127.0.0.1"

    @property
    def connection_string(self) -> str:
        base = f"http://{self.host}"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{AZURITE_ACCOUNT};"
            f"QueueEndpoint={base}:{self.queue_port}/{AZURITE_ACCOUNT};"
            f"TableEndpoint={base}:{self.table_port}/{AZURITE_ACCOUNT};"
        )


@contextlib.contextmanager
def azurite(
    workdir: Path | None = None, blob_port: int = 0, queue_port: int = 0, table_port: int = 0
) -> Iterator[AzuriteEndpoints]:
    """Azurite with in-memory persistence on free ports (or the ones given); yields its endpoints."""
    owned = workdir is None
    work = Path(tempfile.mkdtemp(prefix="azurite-")) if workdir is None else workdir
    picked = iter(free_ports(3))
    ports = AzuriteEndpoints(blob_port or next(picked), queue_port or next(picked), table_port or next(picked))
    argv = [
        "azurite",
        "--silent",
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--loose",
        "--blobHost", ports.host, "--blobPort", str(ports.blob_port),
        "--queueHost", ports.host, "--queuePort", str(ports.queue_port),
        "--tableHost", ports.host, "--tablePort", str(ports.table_port),
    ]  # fmt: skip
    server = _spawn("azurite", argv, [ports.blob_port, ports.queue_port, ports.table_port], work)
    try:
        yield ports
    finally:
        server.stop()
        if owned:
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def cosmos_server(workdir: Path | None = None, port: int = 0) -> Iterator[str]:
    """The Cosmos DB-compatible server (https, self-signed, in memory); yields its endpoint URL."""
    owned = workdir is None
    work = Path(tempfile.mkdtemp(prefix="cosmos-")) if workdir is None else workdir
    port = port or free_port()
    server = _spawn("cosmosdb-server", ["cosmosdb-server", "-p", str(port)], [port], work)
    try:
        yield f"https://localhost:{port}/"
    finally:
        server.stop()
        if owned:
            shutil.rmtree(work, ignore_errors=True)
