"""A throwaway certificate authority and server certificate for the local IoT Hub device endpoint.

The device SDK always speaks TLS on 8883 and verifies the server against the CA it is given
(`server_verification_cert=`), so the broker needs a certificate whose SAN matches every address the cars
dial: `localhost` and the loopback addresses of the per-device listeners (see devstack/iothub/registry.py).
Generated at every start into a private temp dir, never stored, never reused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS listener; `ca_pem` is what clients pass as their trust anchor."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @property
    def ca_pem(self) -> str:
        return self.ca_cert.read_text()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate(directory: Path, addresses: Iterable[str], days: int = 2) -> TlsFiles:
    """Write a fresh CA and a server certificate for `localhost` plus `addresses` (IPs) into `directory`.

    Files are world-readable because Mosquitto drops privileges to its own user before reading them; the key
    protects nothing but a loopback listener that lives as long as the stack.
    """
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("automotive-cloud local CA"))
        .issuer_name(_name("automotive-cloud local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [x509.DNSName("localhost")]
    san += [x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(["127.0.0.1", *addresses])]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    for path in (files.ca_cert, files.server_cert, files.server_key):
        path.chmod(0o644)
    return files


# --- a device PKI for X.509 attestation (DPS enrollment groups, X.509 devices at the hub) --------------------


@dataclass(frozen=True)
class DevicePki:
    """A local test CA as a carmaker has it: a root and the brand's intermediate (what an X.509 enrollment group
    registers); device certificates are issued by the intermediate with CN = registration id."""

    root_cert: x509.Certificate
    intermediate_cert: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey

    @property
    def root_pem(self) -> str:
        return self.root_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @property
    def intermediate_pem(self) -> str:
        return self.intermediate_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass(frozen=True)
class DeviceCertificate:
    """A device's certificate chain (device, then intermediate: what it presents in TLS) and key, as PEM files."""

    cert_file: Path
    key_file: Path


def _ca_cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey, days: int
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(signer, hashes.SHA256())
    )


def device_pki(brand: str = "brand", days: int = 2) -> DevicePki:
    """A fresh root CA and the brand's intermediate, in memory (a stack makes one per start)."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = f"automotive-cloud local device root CA ({brand})"
    root = _ca_cert(root_name, root_key, _name(root_name), root_key, days)
    key = ec.generate_private_key(ec.SECP256R1())
    intermediate = _ca_cert(f"{brand} intermediate CA", key, root.subject, root_key, days)
    return DevicePki(root, intermediate, key)


def issue_device_certificate(
    pki: DevicePki,
    registration_id: str,
    directory: Path,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> DeviceCertificate:
    """A device certificate (CN = registration id, client authentication) issued by the intermediate, written
    with the intermediate after it (the chain the device presents) and its key; validity two days from now unless
    given (an expired one for tests: `not_after` in the past)."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(registration_id))
        .issuer_name(pki.intermediate_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(pki.intermediate_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in registration_id)
    files = DeviceCertificate(directory / f"{safe}.pem", directory / f"{safe}.key")
    files.cert_file.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + pki.intermediate_cert.public_bytes(serialization.Encoding.PEM)
    )
    files.key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.key_file.chmod(0o600)
    return files
