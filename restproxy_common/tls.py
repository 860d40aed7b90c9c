"""TLS to controllers: verify against a CA file, or a certificate pinned per controller.

The original plugin sent HTTPS without verification until Icehouse, then
trusted a combined file of CAs and per-host certificates without checking the
host name. Here every connection checks the certificate chain *and* the host
name (or IP address) against a CA bundle, unless a controller has a pinned
certificate, in which case exactly that certificate is trusted. Turning
verification off takes an explicit ``no_ssl_validation``.
"""

from __future__ import annotations

import os
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


class TLSConfigError(ValueError):
    """A CA file or pinned certificate cannot be read."""


def _load_certificate(path: str) -> ssl.Certificate:
    try:
        with open(path, "rb") as f:
            return ssl.Certificate.loadPEM(f.read())
    except (OSError, SSL.Error, ValueError) as e:
        raise TLSConfigError(f"cannot load certificate {path}: {e}") from None


def _load_trust_root(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TLSConfigError(f"cannot read CA file {path}: {e}") from None
    certificates = []
    marker = b"-----END CERTIFICATE-----"
    for chunk in data.split(marker):
        if b"-----BEGIN CERTIFICATE-----" in chunk:
            certificates.append(ssl.Certificate.loadPEM(chunk + marker))
    if not certificates:
        raise TLSConfigError(f"no certificate in CA file {path}")
    return ssl.trustRootFromCertificates(certificates)


@implementer(IOpenSSLTrustRoot)
class _PinnedTrust:
    """Trust exactly one certificate, even one that a CA signed (OpenSSL's partial-chain mode).

    Without ``X509_V_FLAG_PARTIAL_CHAIN`` OpenSSL only accepts a chain that ends in a
    self-signed root, so pinning a controller's CA-signed certificate would refuse it.
    """

    def __init__(self, certificate: ssl.Certificate) -> None:
        self.certificate = certificate

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        store = context.get_cert_store()
        assert store is not None
        store.add_cert(self.certificate.original)
        store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)


@implementer(IPolicyForHTTPS)
class ControllerTLSPolicy:
    """Per-controller TLS: pinned certificate > CA file > system CAs; or no validation at all."""

    def __init__(self, ca_file: str = "", pinned: dict[str, str] | None = None, no_validation: bool = False) -> None:
        self.no_validation = no_validation
        self._trust = _load_trust_root(ca_file) if ca_file else None
        self._pinned = {netloc: _load_certificate(path) for netloc, path in (pinned or {}).items()}

    @classmethod
    def from_directory(cls, ca_file: str, pinned_dir: str, no_validation: bool) -> ControllerTLSPolicy:
        """Pinned certificates as ``<host>_<port>.pem`` (or ``<host>.pem``) files in ``pinned_dir``."""
        pinned: dict[str, str] = {}
        if pinned_dir and os.path.isdir(pinned_dir):
            for name in sorted(os.listdir(pinned_dir)):
                if name.endswith(".pem"):
                    stem = name[: -len(".pem")]
                    host, _, port = stem.rpartition("_")
                    key = f"{host}:{port}" if host and port.isdigit() else stem
                    pinned[key] = os.path.join(pinned_dir, name)
        return cls(ca_file, pinned, no_validation)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        host = hostname.decode("ascii")
        if self.no_validation:
            return ssl.CertificateOptions(verify=False)
        pinned = self._pinned.get(f"{host}:{port}") or self._pinned.get(host)
        if pinned is not None:
            return ssl.optionsForClientTLS(host, trustRoot=_PinnedTrust(pinned))
        return ssl.optionsForClientTLS(host, trustRoot=self._trust or ssl.platformTrust())
