"""TLS identity for the QUIC transport: the cloud's certificate and how the edge checks it.

The cloud presents a certificate (``ServerTLS``). The edge verifies it in exactly
one of two ways (``ClientTLS``): against a CA file (normal chain and host-name
checks; a self-signed certificate is its own CA), or against a pinned SHA-256
fingerprint of the certificate's DER bytes. There is no third way: verification
cannot be turned off. ``generate_self_signed`` makes a certificate for a test or
a private deployment and returns the fingerprint the edge pins.
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

from picospec.codec.errors import ConfigError


@dataclass(frozen=True)
class ServerTLS:
    """The certificate the cloud presents."""

    certfile: str
    """PEM certificate (chain) file."""
    keyfile: str
    """PEM private key file of that certificate."""


@dataclass(frozen=True)
class ClientTLS:
    """How the edge verifies the cloud: exactly one of a CA file or a pinned fingerprint."""

    cafile: str | None = None
    """PEM file of the CA(s) that must have signed the server's certificate."""
    pin_sha256: str | None = None
    """Hex SHA-256 of the server certificate's DER bytes (colons and case are ignored);
    stored normalised to 64 lowercase hex digits."""
    server_name: str = "localhost"
    """Name sent as SNI; with a CA file, the certificate must be valid for it."""

    def __post_init__(self) -> None:
        if (self.cafile is None) == (self.pin_sha256 is None):
            raise ConfigError(
                "verify the cloud with exactly one of cafile (--ca CERT_FILE) or pin_sha256 "
                "(--pin SHA256, as `picospec cloud gen-cert` prints it); "
                "certificate verification cannot be turned off"
            )
        if self.pin_sha256 is not None:
            object.__setattr__(self, "pin_sha256", normalize_fingerprint(self.pin_sha256))


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits; accepts colons and upper case."""
    hexdigits = text.replace(":", "").strip().lower()
    if len(hexdigits) != 64 or any(c not in "0123456789abcdef" for c in hexdigits):
        raise ConfigError(
            f"a certificate pin is the 64-hex-digit SHA-256 of the certificate, got {text!r}"
        )
    return hexdigits


def fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 of a certificate's DER bytes."""
    return cert.fingerprint(hashes.SHA256()).hex()


def cert_fingerprint(cert_path: str | Path) -> str:
    """Hex SHA-256 of the first certificate in a PEM file (what the edge pins)."""
    return fingerprint(load_certificates(cert_path)[0])


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """The certificates of a PEM file, or a ConfigError that names the file."""
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read PEM certificates from {path}: {e}") from e


def generate_self_signed(
    cert_path: str | Path, key_path: str | Path, host: str = "localhost", days: int = 365
) -> str:
    """Write a self-signed EC P-256 certificate for host and its key; return the fingerprint.

    The subject alternative name is an IP address when host is one, else a DNS
    name. The key file is created with mode 0600 (also when it already existed).
    """
    if days < 1:
        raise ConfigError(f"a certificate must be valid for at least 1 day, got {days}")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return fingerprint(cert)
