"""Run the sandbox: in a background thread (tests, ``smsgw dev``) or in the foreground.

``--tls`` serves HTTPS with a self-signed certificate generated on first use and written
next to its key, so clients that only speak HTTPS can trust it explicitly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateways.sandbox.app import build_app
from gateways.sandbox.state import SandboxState

__all__ = ["SandboxServer", "TlsFiles", "self_signed_certificate", "serve_forever"]

_START_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A certificate and its private key, both PEM."""

    certificate: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """An SSL context serving this certificate."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certificate, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this certificate (for clients of the sandbox)."""
        return ssl.create_default_context(cafile=str(self.certificate))


def self_signed_certificate(directory: Path, host: str = "127.0.0.1") -> TlsFiles:
    """Write (or reuse) a self-signed certificate for ``host`` and ``localhost``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "sandbox-cert.pem", directory / "sandbox-key.pem")
    if files.certificate.exists() and files.key.exists():
        return files
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smsgw sandbox")])
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        alt_names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first, certificate last: the certificate's presence marks a complete pair.
    _write_atomically(files.key, key_pem, mode=0o600)
    _write_atomically(
        files.certificate, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644
    )
    return files


def _write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``path`` whole or not at all, with ``mode``.

    A temporary file in the same directory is renamed over the target, so a concurrent
    reader or a crash never sees half a file. ``mkstemp`` creates it with mode 0600, so a
    key is never readable by others, not even briefly; a wider ``mode`` is applied before
    the rename.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if mode != 0o600:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class SandboxServer:
    """The sandbox on a loopback port, served from a background thread; a context manager.

    Args:
        state: The sandbox state (accounts, faults, inbox); a default one when omitted.
        host: The address to bind.
        port: The port; a free one (chosen by the OS) when 0.
        tls: Serve HTTPS with these files.
    """

    def __init__(
        self,
        state: SandboxState | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TlsFiles | None = None,
    ) -> None:
        self.state = state or SandboxState()
        self.host = host
        self.port = port
        self.tls = tls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL every simulated provider is served under."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> SandboxServer:
        """Start serving; returns once the port is open."""
        self._thread = threading.Thread(target=self._run, name="smsgw-sandbox", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            raise RuntimeError("the sandbox did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the sandbox failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._open())
        except Exception as error:
            # A thread boundary: whatever _open raises (a busy port, a bad certificate, a
            # broken provider module) must reach start(), which waits on _ready; uncaught,
            # it would end this thread silently and start() would time out instead.
            self._error = error
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._close())
        loop.close()

    async def _open(self) -> None:
        self._runner = web.AppRunner(build_app(self.state), access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        ssl_context = self.tls.server_context() if self.tls else None
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_forever(
    state: SandboxState, *, host: str, port: int, tls: TlsFiles | None = None
) -> None:
    """Serve in the foreground until interrupted (``smsgw sandbox``)."""
    ssl_context = tls.server_context() if tls else None
    web.run_app(
        build_app(state), host=host, port=port, ssl_context=ssl_context, access_log=None,
        print=None,
    )  # fmt: skip
