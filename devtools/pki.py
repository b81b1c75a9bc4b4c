"""A throw-away certificate authority for the local etcd of `make demo`, the tests
and the benchmarks: one CA, etcd's server certificate (127.0.0.1, localhost) and one
client certificate per etcd identity (the certificate's CN is the etcd user name).

Made fresh at every start, into a directory of the caller's (private keys mode
0600); never used for a real cluster, whose certificates come from its operators'
own CA (docs/security.md).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from events.etcd_client import EtcdCredentials

VALID = datetime.timedelta(days=2)


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalPki:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    def credentials(self, identity: str) -> EtcdCredentials:
        """The CA plus `identity`'s client certificate (made by `issue`)."""
        return EtcdCredentials(
            ca=self.ca,
            cert=self.directory / f"{identity}.pem",
            key=self.directory / f"{identity}.key",
        )

    @classmethod
    def create(cls, directory: Path, *, identities: tuple[str, ...]) -> LocalPki:
        """A new CA, etcd's server pair, and a client pair per identity."""
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory=directory)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corral local etcd CA")])
        now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + VALID)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_key(directory / "ca.key", ca_key)
        pki.issue("server", cn="127.0.0.1", server=True)
        for identity in identities:
            pki.issue(identity, cn=identity)
        return pki

    def issue(self, stem: str, *, cn: str | None, server: bool = False) -> EtcdCredentials:
        """A client (or server) pair `stem.pem`/`stem.key` signed by this CA, with
        subject CN `cn` (None: no CN, as etcd's grpc-proxy wants)."""
        ca_cert = x509.load_pem_x509_certificate(self.ca.read_bytes())
        ca_key = serialization.load_pem_private_key(
            (self.directory / "ca.key").read_bytes(), password=None
        )
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [] if cn is None else [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(ca_cert.not_valid_before_utc)
            .not_valid_after(ca_cert.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                    if server
                    else [ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(self.directory / f"{stem}.key", key)
        (self.directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return self.credentials(stem)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
