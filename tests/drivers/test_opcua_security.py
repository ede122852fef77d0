"""OPC UA Basic256Sha256 security with certificates generated per test."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from drivers.errors import DriverConfigError
from drivers.opcua import DriverState, OpcUaDriver
from drivers.opcua_security import CertificateUriMismatchError
from drivers.sim.opcua_server import SERVER_APPLICATION_URI, OpcUaSimulator
from drivers.sim.recordings import load_recording
from drivers.spec import OpcUaSecurityMode, OpcUaSecurityPolicy
from tests.drivers.test_opcua import RECORDING, WAVEFORM_SAMPLES, make_spec

CLIENT_URI = "urn:cmagent:test:client"


def write_certificate(
    directory: Path, stem: str, application_uri: str
) -> tuple[Path, Path]:
    """Write a self-signed RSA 2048 certificate (DER) and key (PEM), mode 0600."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(application_uri),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )

    cert_path = directory / f"{stem}.der"
    key_path = directory / f"{stem}.pem"
    for path, data in (
        (cert_path, certificate.public_bytes(serialization.Encoding.DER)),
        (
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ),
        ),
    ):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
    return cert_path, key_path


@pytest.fixture
def client_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_certificate(tmp_path, "client", CLIENT_URI)


@pytest.fixture
async def secure_simulator(tmp_path: Path) -> AsyncIterator[OpcUaSimulator]:
    cert, key = write_certificate(tmp_path, "server", SERVER_APPLICATION_URI)
    sim = OpcUaSimulator(
        update_period_s=60.0, certificate_path=cert, private_key_path=key
    )
    await sim.start()
    yield sim
    await sim.stop()


class TestBasic256Sha256:
    def test_key_files_are_private(self, client_files: tuple[Path, Path]) -> None:
        for path in client_files:
            assert path.stat().st_mode & 0o777 == 0o600

    @pytest.mark.parametrize(
        "mode", [OpcUaSecurityMode.SIGN_AND_ENCRYPT, OpcUaSecurityMode.SIGN]
    )
    async def test_secure_session_reads_waveform(
        self,
        secure_simulator: OpcUaSimulator,
        client_files: tuple[Path, Path],
        mode: OpcUaSecurityMode,
    ) -> None:
        cert, key = client_files
        spec = make_spec(
            secure_simulator.endpoint,
            security_policy=OpcUaSecurityPolicy.BASIC256SHA256,
            security_mode=mode,
            certificate_path=str(cert),
            private_key_path=str(key),
            application_uri=CLIENT_URI,
        )
        opcua = OpcUaDriver(spec)
        await opcua.connect()
        try:
            state = opcua.state
            waveform = await opcua.read_waveform("accel")
            readings = await opcua.read_points()
        finally:
            await opcua.close()

        assert state is DriverState.CONNECTED
        assert waveform.samples.size == WAVEFORM_SAMPLES
        assert waveform.fs_hz == load_recording(RECORDING).fs_hz
        assert all(reading.quality.is_good for reading in readings)

    def test_application_uri_missing_from_certificate(
        self, client_files: tuple[Path, Path]
    ) -> None:
        cert, key = client_files
        spec = make_spec(
            "opc.tcp://127.0.0.1:4840",
            security_policy=OpcUaSecurityPolicy.BASIC256SHA256,
            security_mode=OpcUaSecurityMode.SIGN_AND_ENCRYPT,
            certificate_path=str(cert),
            private_key_path=str(key),
            application_uri="urn:cmagent:other",
        )

        with pytest.raises(CertificateUriMismatchError) as caught:
            OpcUaDriver(spec)

        message = str(caught.value)
        assert "'urn:cmagent:other'" in message
        assert f"'{CLIENT_URI}'" in message
        assert str(cert) in message
        assert caught.value.certificate_uris == (CLIENT_URI,)
        assert caught.value.path == str(cert)

    def test_policy_without_certificate(self) -> None:
        spec = make_spec(
            "opc.tcp://127.0.0.1:4840",
            security_policy=OpcUaSecurityPolicy.BASIC256SHA256,
            security_mode=OpcUaSecurityMode.SIGN,
        )
        with pytest.raises(DriverConfigError, match="needs a client certificate"):
            OpcUaDriver(spec)

    def test_policy_and_mode_must_agree(self) -> None:
        spec = dataclasses.replace(
            make_spec("opc.tcp://127.0.0.1:4840"),
            security_mode=OpcUaSecurityMode.SIGN,
        )
        with pytest.raises(DriverConfigError, match="does not go with security_mode"):
            OpcUaDriver(spec)
