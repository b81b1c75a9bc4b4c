"""How corral reaches etcd: endpoint URLs (`http://`, `https://` or a bare
HOST:PORT), the TLS credentials of one etcd identity (CA, client certificate and
key; the certificate's CN is the etcd user, so etcd's roles decide what it may
do), an aetcd client that opens a TLS gRPC channel, and clear one-line errors for
every way that can fail (a missing or unreadable file, a key that does not match
its certificate, a server certificate not signed by the CA, a client certificate
etcd refuses, a user without the permission).

aetcd 1.0.0 opens only insecure channels; `TlsClient` replaces its `connect` with
the same steps over `grpc.aio.secure_channel` (docs/security.md says why this and
not a TLS proxy). Must not log or echo key material.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aetcd
import grpc
from aetcd import rpc, watcher

DEFAULT_PORT = 2379


class EtcdConfigError(ValueError):
    """An endpoint or a credential file that cannot be used; one line, names it."""


class EtcdPermissionDenied(Exception):
    """etcd refused a request for lack of permission (the identity's role)."""

    def __init__(self, *, identity: str, operation: str, detail: str) -> None:
        self.identity = identity
        self.operation = operation
        super().__init__(
            f"etcd refused {operation} for {identity or 'this client'}: {detail} "
            "(its etcd role does not allow it; see docs/security.md)"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    host: str
    port: int
    secure: bool

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.target}"


def parse_endpoint(raw: str, *, tls: bool) -> Endpoint:
    """`https://H:P` (TLS), `http://H:P` (plaintext) or `H:P` (TLS when the
    client has credentials). EtcdConfigError for anything else, including an
    `http://` endpoint given together with credentials."""
    text = raw.strip()
    scheme = ""
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise EtcdConfigError(f"etcd endpoint {raw!r}: the scheme must be http or https")
    else:
        text = f"{'https' if tls else 'http'}://{text}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise EtcdConfigError(f"etcd endpoint {raw!r} is not HOST:PORT or a URL") from None
    if (
        not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise EtcdConfigError(f"etcd endpoint {raw!r} is not HOST:PORT or http(s)://HOST:PORT")
    if port is None or not 0 < port < 65536:
        raise EtcdConfigError(f"etcd endpoint {raw!r} needs a port between 1 and 65535")
    secure = parts.scheme == "https"
    if scheme == "http" and tls:
        raise EtcdConfigError(
            f"etcd endpoint {raw!r} is plaintext http:// but TLS credentials were given; "
            "use https://"
        )
    return Endpoint(host=parts.hostname, port=port, secure=secure)


@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdCredentials:
    """One etcd identity's files: the CA that signed etcd's server certificate,
    and (for client-certificate authentication) the client certificate and key.
    Paths only; the files are read when a connection opens."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise EtcdConfigError(
                "etcd client certificate and key go together: give both or neither"
            )

    def _read(self, path: Path, what: str) -> bytes:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise EtcdConfigError(f"etcd {what} {path}: {exc.strerror or exc}") from None
        if b"-----BEGIN" not in data:
            raise EtcdConfigError(f"etcd {what} {path} is not a PEM file")
        return data

    def load(self) -> tuple[bytes, bytes | None, bytes | None]:
        """(CA, certificate, key) bytes, checked: the key must match the
        certificate. EtcdConfigError naming the file otherwise."""
        ca = self._read(self.ca, "CA file")
        if self.cert is None or self.key is None:
            return ca, None, None
        cert = self._read(self.cert, "client certificate")
        key = self._read(self.key, "client key")
        context = ssl.create_default_context()
        try:
            context.load_verify_locations(cadata=ca.decode(errors="replace"))
        except ssl.SSLError:
            raise EtcdConfigError(f"etcd CA file {self.ca} holds no usable certificate") from None
        try:
            context.load_cert_chain(certfile=str(self.cert), keyfile=str(self.key))
        except ssl.SSLError:
            raise EtcdConfigError(
                f"etcd client key {self.key} does not match certificate {self.cert}"
            ) from None
        return ca, cert, key

    def identity(self) -> str:
        """The etcd user this certificate authenticates as (its subject CN), or ""
        without a client certificate."""
        if self.cert is None:
            return ""
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        try:
            cert = x509.load_pem_x509_certificate(self._read(self.cert, "client certificate"))
        except ValueError:
            raise EtcdConfigError(f"etcd client certificate {self.cert} does not parse") from None
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names:
            raise EtcdConfigError(f"etcd client certificate {self.cert} has no CN (no etcd user)")
        return str(names[0].value)


# gRPC refuses an answer over 4 MB by default; a page of the log (1,000 events) at
# 2,000 instances was 5 MB (nodes' observations of 100 resources each), which made
# every full read of the log fail there. etcd caps one value at 1.5 MB; pages stay
# pages, this only lifts the client's cap on one answer.
CHANNEL_OPTIONS = {"grpc.max_receive_message_length": 256 * 1024 * 1024}


class TlsClient(aetcd.Client):  # type: ignore[misc]
    """aetcd's client over a TLS channel (aetcd's own `connect` builds only
    `grpc.aio.insecure_channel`); the rest of aetcd is used unchanged."""

    def __init__(self, *, host: str, port: int, credentials: EtcdCredentials, timeout: int) -> None:
        super().__init__(host=host, port=port, timeout=timeout, options=dict(CHANNEL_OPTIONS))
        ca, cert, key = credentials.load()
        self._tls = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # type: ignore[has-type]
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            host = f"[{self._host}]" if ":" in self._host else self._host
            self.channel = grpc.aio.secure_channel(
                f"{host}:{self._port}", self._tls, options=list(self._options.items())
            )
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self.auth_stub = rpc.AuthStub(self.channel)
            self._watcher = watcher.Watcher(
                rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False


def make_client(
    endpoint: Endpoint, credentials: EtcdCredentials | None, *, timeout: float
) -> aetcd.Client:
    if endpoint.secure:
        if credentials is None:
            raise EtcdConfigError(
                f"etcd at {endpoint.url} speaks TLS: give its CA (and this identity's "
                "certificate and key) with --etcd-cacert/--etcd-cert/--etcd-key or "
                "$CORRAL_ETCD_CACERT/$CORRAL_ETCD_CERT/$CORRAL_ETCD_KEY"
            )
        return TlsClient(
            host=endpoint.host,
            port=endpoint.port,
            credentials=credentials,
            timeout=int(max(timeout, 1)),
        )
    return aetcd.Client(
        host=endpoint.host,
        port=endpoint.port,
        timeout=int(max(timeout, 1)),
        options=dict(CHANNEL_OPTIONS),
    )


async def diagnose_tls(
    endpoint: Endpoint, credentials: EtcdCredentials, *, timeout: float = 2.0
) -> str:
    """Why a TLS connection to etcd failed, in words, after gRPC only said
    UNAVAILABLE: opens one TLS connection with Python's ssl and reads the alert
    the server sends (an unknown CA, a missing certificate), or names the server
    certificate's problem. "" when the handshake works."""
    context = ssl.create_default_context(cafile=str(credentials.ca))
    if credentials.cert is not None and credentials.key is not None:
        context.load_cert_chain(certfile=str(credentials.cert), keyfile=str(credentials.key))
    context.set_alpn_protocols(["h2"])
    writer: asyncio.StreamWriter | None = None
    try:
        reader, opened = await asyncio.wait_for(
            asyncio.open_connection(
                endpoint.host, endpoint.port, ssl=context, server_hostname=endpoint.host
            ),
            timeout,
        )
        writer = opened
        # A TLS 1.3 server checks the client certificate after the handshake:
        # its refusal arrives as an alert on the first read. An HTTP/2 preface
        # makes an accepting server answer at once.
        try:
            opened.write(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            )
            await opened.drain()
            answer = await asyncio.wait_for(reader.read(1), timeout)
        except (ConnectionError, asyncio.IncompleteReadError):
            answer = b""  # closed under the write or the read: both seen with etcd 3.4
        if answer:
            return ""
        # Closed without an alert (etcd 3.4 does so): the handshake went
        # through, so the only thing it can have refused is the client side.
        if credentials.cert is None:
            return "etcd closed the connection after the TLS handshake: it wants a certificate"
        return (
            f"etcd refused the client certificate {credentials.cert} (it closed the "
            "connection after the handshake); is it signed by the CA etcd trusts "
            "(--trusted-ca-file)?"
        )
    except ssl.SSLCertVerificationError as exc:
        return (
            f"etcd's server certificate was not accepted ({exc.verify_message}); "
            f"is it signed by the CA in {credentials.ca}?"
        )
    except ssl.SSLError as exc:
        reason = (exc.reason or str(exc)).lower().replace("_", " ")
        if credentials.cert is None:
            return f"etcd refused the TLS connection ({reason}): it wants a client certificate"
        return (
            f"etcd refused the client certificate {credentials.cert} ({reason}); "
            "is it signed by the CA etcd trusts (--trusted-ca-file)?"
        )
    except (OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
