"""TLS for the API: a CA kept in the state dir, and a server certificate made at each start.

kubectl sends a kubeconfig's credentials only to an https server (client-go's
clientcmd applies the user's token only when ``IsConfigTransportTLS``), and a
token sent in clear text could be read on the wire, so the API is served over
TLS, as kube-apiserver's secure port is. The CA (``ca.pem``: key and
certificate, 0600) is made once per state dir and kept, so a kubeconfig stays
valid across restarts; the server certificate, for the listening address and
``localhost``, is signed afresh at each start and never written to disk.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .private_files import create_once

CA_FILE = "ca.pem"
CA_DAYS = 3650
SERVER_DAYS = 365
CLOCK_SKEW = dt.timedelta(minutes=5)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    """Digital signature only, plus certificate and CRL signing for a CA."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _new_ca() -> bytes:
    """A fresh CA's key and self-signed certificate, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localcluster-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key) + cert.public_bytes(serialization.Encoding.PEM)


def _alt_names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            names.append(x509.DNSName(host))
    else:
        if x509.IPAddress(address) not in names:
            names.append(x509.IPAddress(address))
    return names


def _server_cert(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, host: str) -> bytes:
    """A server key and certificate for ``host`` and localhost signed by the CA, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localcluster")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_alt_names(host)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _key_pem(key) + cert.public_bytes(serialization.Encoding.PEM)


def server_context(state_dir: Path, host: str) -> tuple[ssl.SSLContext, bytes]:
    """A TLS server context for ``host``, and the PEM certificate of the CA clients should trust."""
    pem = create_once(state_dir / CA_FILE, _new_ca)
    ca_key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise SystemExit(f"{state_dir / CA_FILE} does not hold localcluster's CA; delete it")
    ca_cert = x509.load_pem_x509_certificate(pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # load_cert_chain reads only from a file: a private temporary one, gone once read.
    with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".server-", suffix=".pem") as fh:
        fh.write(_server_cert(ca_key, ca_cert, host))
        fh.flush()
        context.load_cert_chain(fh.name)
    return context, ca_cert.public_bytes(serialization.Encoding.PEM)
