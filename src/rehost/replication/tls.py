"""TLS material of the replication servers: a local CA and one server certificate in ``D/tls/``.

``ensure_tls(data_dir)`` creates what is missing (CA ``ca.pem``/``ca.key``, server certificate
``replication.pem``/``replication.key`` with SAN 127.0.0.1 and localhost, signed by the CA) and returns the
CA certificate as PEM text: the ``caCertPem`` agents are given. It is safe to call from several processes
at once (an exclusive lock on ``D/tls/.lock``) and never replaces existing material.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rehost.errors import ReplicationError
from rehost.fsutil import atomic_write

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "replication.pem"
SERVER_KEY = "replication.key"
VALIDITY = dt.timedelta(days=3650)


def tls_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "tls"


def ensure_tls(data_dir: Path, extra_hosts: tuple[str, ...] = ()) -> str:
    """Create the CA and the server certificate if missing; return the CA certificate (PEM text).

    ``extra_hosts`` (host names or IP addresses) are added to the SAN of a certificate created now; an
    existing certificate is kept as it is.
    """
    folder = tls_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / CA_CERT).exists() or not (folder / CA_KEY).exists():
            _write_ca(folder)
        if not (folder / SERVER_CERT).exists() or not (folder / SERVER_KEY).exists():
            _write_server_cert(folder, extra_hosts)
        return (folder / CA_CERT).read_text()


def server_context(data_dir: Path) -> ssl.SSLContext:
    """A TLS 1.3 server context with ``D/tls/replication.pem``/``.key`` (created by ``ensure_tls`` if needed)."""
    ensure_tls(data_dir)
    folder = tls_dir(data_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_cert_chain(folder / SERVER_CERT, folder / SERVER_KEY)
    except (OSError, ssl.SSLError) as exc:
        raise ReplicationError(f"cannot load the replication server certificate in {folder}: {exc}") from exc
    return ctx


def _write_ca(folder: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rehost replication CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    # the key first: a certificate without its key would be kept by the next call
    atomic_write(folder / CA_KEY, _key_pem(key))
    atomic_write(folder / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))


def _write_server_cert(folder: Path, extra_hosts: tuple[str, ...]) -> None:
    ca_key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ReplicationError(f"{folder / CA_KEY} is not an EC private key")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    for host in extra_hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rehost replication server")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    atomic_write(folder / SERVER_KEY, _key_pem(key))
    atomic_write(folder / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


