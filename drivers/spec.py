"""Plain descriptions of devices, points and waveforms that drivers consume.

The agent validates technicians' TOML (configuration and device profiles)
with pydantic and converts it into these records, so drivers depend on
neither pydantic nor the agent. Addresses are zero-based protocol offsets:
Modicon numbers such as 40001 are converted before they get here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Final

from drivers.errors import DriverConfigError

MAX_ADDRESS: Final = 65535
"""Highest register or bit offset of the Modbus data model (16 bits)."""


def _check_addresses(spec: ModbusPointSpec | ModbusWaveformSpec) -> None:
    """Raise DriverConfigError for an address field outside 0..65535.

    pymodbus would otherwise raise its own ValueError at the first request.
    """
    for spec_field in fields(spec):
        if spec_field.name != "address" and not spec_field.name.endswith("_address"):
            continue
        value = getattr(spec, spec_field.name)
        if value is not None and not 0 <= value <= MAX_ADDRESS:
            raise DriverConfigError(
                f"{type(spec).__name__} {spec.name!r}: {spec_field.name} "
                f"expected 0..{MAX_ADDRESS}, found {value!r}"
            )


class RegisterTable(enum.Enum):
    """Modbus data table a point lives in."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    INPUT = "input"
    HOLDING = "holding"


class DataType(enum.Enum):
    """Encoding of a value in Modbus registers or bits."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BOOL = "bool"
    STRING = "string"


REGISTER_COUNT: dict[DataType, int] = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
    DataType.BOOL: 1,
}
"""Registers each fixed-size type occupies; strings take a configured count."""


class Endian(enum.Enum):
    """Order of bytes within a register, or of registers within a value.

    Byte order BIG with word order BIG is ABCD; BIG/LITTLE is CDAB;
    LITTLE/BIG is BADC; LITTLE/LITTLE is DCBA.
    """

    BIG = "big"
    LITTLE = "little"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusPointSpec:
    """One scalar point read from Modbus registers or bits.

    ``count`` is in registers (bits for coils and discrete inputs). ``bit``
    selects one bit (0 = least significant) of a register for a BOOL point
    in a register table. The engineering value is ``raw * scale + offset``.
    A value outside ``valid_range`` is reported bad/out_of_range.
    """

    name: str
    asset: str
    unit: str = ""
    table: RegisterTable = RegisterTable.HOLDING
    address: int
    data_type: DataType = DataType.UINT16
    count: int = 1
    byte_order: Endian = Endian.BIG
    word_order: Endian = Endian.BIG
    scale: float = 1.0
    offset: float = 0.0
    bit: int | None = None
    valid_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _check_addresses(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusWaveformSpec:
    """A waveform capture block served over Modbus registers.

    A capture runs in five steps:

    1. write 1 to ``trigger_address`` (holding), if set;
    2. poll ``ready_address`` until it is non-zero;
    3. read ``sequence_address``, ``sample_rate_address``
       (``sample_rate_type``, Hz) and ``sample_count_address`` (uint16 or
       uint32 by ``sample_count_type``);
    4. read the samples from ``block_address`` in chunks of at most
       ``chunk_registers``;
    5. read the sequence again, and retry the capture when it changed.

    Samples are ``raw * scale`` in ``unit``. ``rpm_address`` (``rpm_type``)
    gives the shaft speed at capture time when the sensor measures it.

    When ``capture_length_address`` is set, the driver first writes the
    requested length, ``capture_samples`` (``max_samples`` when None), to
    that holding register as ``sample_count_type``. A capture longer than
    the 16-bit address space allows is paged: with ``page_address`` and
    ``page_samples`` set, the driver writes page index 0, 1, ... to that
    holding register, and each page's ``page_samples`` samples then appear
    at ``block_address``.
    """

    name: str
    asset: str
    unit: str = "g"
    table: RegisterTable = RegisterTable.INPUT
    block_address: int
    sample_type: DataType = DataType.FLOAT32
    max_samples: int
    sample_count_address: int
    sample_count_type: DataType = DataType.UINT32
    sample_rate_address: int
    sample_rate_type: DataType = DataType.FLOAT32
    sequence_address: int
    ready_address: int | None = None
    trigger_address: int | None = None
    rpm_address: int | None = None
    rpm_type: DataType = DataType.FLOAT32
    byte_order: Endian = Endian.BIG
    word_order: Endian = Endian.BIG
    scale: float = 1.0
    chunk_registers: int = 120
    ready_timeout_s: float = 5.0
    capture_length_address: int | None = None
    capture_samples: int | None = None
    page_address: int | None = None
    page_samples: int | None = None

    def __post_init__(self) -> None:
        _check_addresses(self)


class TransactionIdCheck(enum.Enum):
    """How strictly a Modbus TCP answer's transaction id must match."""

    STRICT = "strict"
    LENIENT = "lenient"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusTcpSpec:
    """A Modbus TCP device (one unit id behind one host and port)."""

    device_id: str
    host: str
    port: int = 502
    unit_id: int = 1
    timeout_s: float = 2.0
    connect_timeout_s: float = 5.0
    retries: int = 1
    transaction_id_check: TransactionIdCheck = TransactionIdCheck.STRICT
    max_registers_per_request: int = 125
    max_gap_registers: int = 10
    points: tuple[ModbusPointSpec, ...] = ()
    waveforms: tuple[ModbusWaveformSpec, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ModbusRtuSpec:
    """A Modbus RTU device: one unit id on a serial line shared with others."""

    device_id: str
    serial_port: str
    baudrate: int = 19200
    parity: str = "E"
    stopbits: int = 1
    bytesize: int = 8
    unit_id: int = 1
    timeout_s: float = 1.0
    retries: int = 1
    max_registers_per_request: int = 125
    max_gap_registers: int = 10
    points: tuple[ModbusPointSpec, ...] = ()
    waveforms: tuple[ModbusWaveformSpec, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcUaNodeRef:
    """A node found by node id or by browse path, never by a bare index.

    ``node_id`` uses the namespace URI form ``nsu=URI;s=Name`` (or ``i=``,
    ``g=``, ``b=``). ``browse_path`` is a sequence of qualified names starting
    below the Objects folder, each written ``{namespace-uri}Name``; a name
    without braces is in namespace 0. Exactly one of the two is set.
    """

    node_id: str | None = None
    browse_path: tuple[str, ...] | None = None

    def describe(self) -> str:
        """Return the reference as written in configuration, for messages."""
        if self.node_id is not None:
            return self.node_id
        return "/" + "/".join(self.browse_path or ())


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcUaPointSpec:
    """One scalar OPC UA variable; value is ``raw * scale + offset``."""

    name: str
    asset: str
    node: OpcUaNodeRef
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    valid_range: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcUaWaveformSpec:
    """A waveform served as an array variable with a sample-rate variable."""

    name: str
    asset: str
    samples: OpcUaNodeRef
    sample_rate: OpcUaNodeRef
    unit: str = "g"
    rpm: OpcUaNodeRef | None = None
    sequence: OpcUaNodeRef | None = None
    scale: float = 1.0


class OpcUaSecurityPolicy(enum.Enum):
    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"


class OpcUaSecurityMode(enum.Enum):
    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcUaSpec:
    """An OPC UA server endpoint and what to read from it.

    With a security policy other than None, ``certificate_path`` and
    ``private_key_path`` are the client's, and ``application_uri`` must be
    in the certificate's subject alternative names.
    ``max_message_size`` of 0 keeps the library default. ``password`` goes
    with ``username``; the agent loads it from a credential, never from
    configuration, and ``repr`` leaves it out.
    """

    device_id: str
    endpoint: str
    security_policy: OpcUaSecurityPolicy = OpcUaSecurityPolicy.NONE
    security_mode: OpcUaSecurityMode = OpcUaSecurityMode.NONE
    certificate_path: str | None = None
    private_key_path: str | None = None
    server_certificate_path: str | None = None
    application_uri: str = "urn:cmagent:client"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 4.0
    use_subscriptions: bool = True
    publishing_interval_s: float = 1.0
    max_message_size: int = 0
    points: tuple[OpcUaPointSpec, ...] = ()
    waveforms: tuple[OpcUaWaveformSpec, ...] = ()


DeviceSpec = ModbusTcpSpec | ModbusRtuSpec | OpcUaSpec
