"""Certificates and keys for the secured local broker (``secure.py``), made with ``cryptography``.

A CA (kept), the broker's certificate signed by it (names 127.0.0.1 and localhost; issued
again when it nears its end), and for the tests a CA nobody trusts, a certificate for
another host name, and the local OAuth issuer's RS256 key with the JWKS the broker checks
tokens against. Private keys are written readable by their owner only.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3 * 365
CERT_DAYS = 90
RENEW_BEFORE_DAYS = 14
BROKER_HOSTS = ["127.0.0.1", "localhost"]
_UNUSED = dict.fromkeys(
    ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
     "encipher_only", "decipher_only"),
    False,
)  # fmt: skip


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (created so, never widened later)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def new_ca(cn: str, days: int = CA_DAYS) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **_UNUSED)
    cert = (
        _builder(cn, _name(cn), key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def new_leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str, hosts: list[str]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A certificate for a TLS server that is also a TLS client (the broker to itself)."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    cert = (
        _builder(cn, ca_cert.subject, key, CERT_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(both), critical=False)
        .add_extension(authority, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    # Unencrypted PKCS#8 (what Kafka's PEM key store reads without ssl.key.password), in
    # files only the owner may read.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_ca(tls: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key((tls / "ca-key.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key, x509.load_pem_x509_certificate((tls / "ca.pem").read_bytes())


def expires_within(path: Path, days: int) -> bool:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < dt.timedelta(days=days)


def ensure_certificates(tls: Path, oauth: Path) -> list[str]:
    """Make what is missing (and the broker's certificate again when it nears its end);
    returns what it made."""
    made: list[str] = []
    if not (tls / "ca.pem").exists():
        key, cert = new_ca("hitl local CA")
        write_private(tls / "ca-key.pem", pem_key(key))
        (tls / "ca.pem").write_bytes(pem_cert(cert))
        made.append("ca")
    ca_key, ca_cert = _load_ca(tls)
    broker = tls / "broker.pem"
    if not broker.exists() or expires_within(broker, RENEW_BEFORE_DAYS):
        key, cert = new_leaf(ca_key, ca_cert, "kafka-broker", BROKER_HOSTS)
        # Kafka's PEM key store: the private key, then the chain up to the CA.
        keystore = pem_key(key) + pem_cert(cert) + pem_cert(ca_cert)
        write_private(tls / "broker-keystore.pem", keystore)
        broker.write_bytes(pem_cert(cert))
        made.append("broker certificate")
    if not (tls / "untrusted-ca.pem").exists():
        _, cert = new_ca("a CA nobody here trusts", days=365)
        (tls / "untrusted-ca.pem").write_bytes(pem_cert(cert))
        made.append("untrusted ca")
    if not (tls / "wrong-host.pem").exists():
        key, cert = new_leaf(ca_key, ca_cert, "wrong-host", ["wrong-host.invalid"])
        write_private(tls / "wrong-host-key.pem", pem_key(key))
        (tls / "wrong-host.pem").write_bytes(pem_cert(cert) + pem_cert(ca_cert))
        made.append("wrong-host certificate")
    if not (oauth / "jwks.json").exists():
        oauth_keys(oauth)
        made.append("oauth signing key")
    return made


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def oauth_keys(oauth: Path) -> None:
    """The local token issuer's RS256 key, and the JWKS the broker checks tokens against."""
    key = rsa.generate_private_key(public_exponent=65_537, key_size=2048)
    numbers = key.public_key().public_numbers()
    kid = secrets.token_hex(8)
    jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
           "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}  # fmt: skip
    write_private(oauth / "signing-key.pem", pem_key(key))
    (oauth / "kid").write_text(kid)
    (oauth / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
