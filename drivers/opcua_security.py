"""Client certificate checks and security settings for the OPC UA driver."""

from __future__ import annotations

from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from drivers.errors import DriverConfigError
from drivers.spec import OpcUaSecurityMode, OpcUaSecurityPolicy, OpcUaSpec


class CertificateUriMismatchError(DriverConfigError):
    """The client certificate does not carry the configured application URI.

    OPC UA servers compare the ApplicationUri a client announces with the
    URIs in its certificate's subject alternative names and reject the
    session when none matches.
    """

    def __init__(
        self,
        message: str,
        *,
        device: str,
        path: str,
        application_uri: str,
        certificate_uris: tuple[str, ...],
    ) -> None:
        super().__init__(message, device=device)
        self.path = path
        self.application_uri = application_uri
        self.certificate_uris = certificate_uris


def load_certificate(path: str, *, device: str) -> x509.Certificate:
    """Load a PEM or DER certificate file.

    Raises:
        DriverConfigError: the file cannot be read or is no certificate.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DriverConfigError(
            f"device {device!r}: cannot read certificate file {path!r}: {exc.strerror}",
            device=device,
        ) from exc
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise DriverConfigError(
            f"device {device!r}: {path!r} is not a PEM or DER X.509 certificate",
            device=device,
        ) from exc


def certificate_uris(certificate: x509.Certificate) -> tuple[str, ...]:
    """Return the URIs in a certificate's subject alternative names."""
    try:
        extension = certificate.extensions.get_extension_for_oid(
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME
        )
    except x509.ExtensionNotFound:
        return ()
    names = extension.value.get_values_for_type(x509.UniformResourceIdentifier)
    return tuple(names)


def check_security(spec: OpcUaSpec) -> None:
    """Check the security settings of a device before any I/O.

    Raises:
        DriverConfigError: policy and mode disagree, a file is missing, or
            the certificate is unreadable.
        CertificateUriMismatchError: ``application_uri`` is not among the
            certificate's subject alternative name URIs.
    """
    device = spec.device_id
    policy_none = spec.security_policy is OpcUaSecurityPolicy.NONE
    mode_none = spec.security_mode is OpcUaSecurityMode.NONE
    if policy_none != mode_none:
        raise DriverConfigError(
            f"device {device!r}: security_policy {spec.security_policy.value!r} "
            f"does not go with security_mode {spec.security_mode.value!r}; "
            "expected both None, or Basic256Sha256 with Sign or SignAndEncrypt",
            device=device,
        )
    if policy_none:
        return
    if spec.certificate_path is None or spec.private_key_path is None:
        raise DriverConfigError(
            f"device {device!r}: security_policy "
            f"{spec.security_policy.value!r} needs a client certificate and "
            "private key; set certificate and private_key",
            device=device,
        )

    certificate = load_certificate(spec.certificate_path, device=device)
    uris = certificate_uris(certificate)
    if spec.application_uri not in uris:
        found = ", ".join(repr(uri) for uri in uris) or "none"
        raise CertificateUriMismatchError(
            f"device {device!r}: application_uri {spec.application_uri!r} is "
            f"not in the subject alternative names of certificate "
            f"{spec.certificate_path!r} (URIs found: {found}); set "
            "application_uri to one of them or issue a certificate with it",
            device=device,
            path=spec.certificate_path,
            application_uri=spec.application_uri,
            certificate_uris=uris,
        )
    if not Path(spec.private_key_path).is_file():
        raise DriverConfigError(
            f"device {device!r}: private key file {spec.private_key_path!r} not found",
            device=device,
        )


async def apply_security(client: Client, spec: OpcUaSpec) -> None:
    """Configure the client's security policy, mode and certificates.

    Without ``server_certificate_path`` the server certificate is taken from
    the server's endpoint list, which costs one unsecured GetEndpoints call.
    """
    if spec.security_policy is OpcUaSecurityPolicy.NONE:
        return
    mode = (
        ua.MessageSecurityMode.Sign
        if spec.security_mode is OpcUaSecurityMode.SIGN
        else ua.MessageSecurityMode.SignAndEncrypt
    )
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        certificate=str(spec.certificate_path),
        private_key=str(spec.private_key_path),
        server_certificate=spec.server_certificate_path,
        mode=mode,
    )
