"""Signal processing for condition monitoring: arrays in, records out.

``analyse`` computes every vibration indicator of one waveform from a
single Hann-windowed rfft. The modules below it can be used alone:
``spectrum``, ``time_domain``, ``velocity`` (ISO 20816-3 zones),
``orders``, ``bearings`` (defect frequencies and a small catalogue),
``envelope``, ``lines``, ``diagnosis`` and ``oil`` (ISO 4406 codes, water
saturation, trends). Nothing here does I/O or logging; invalid input
raises ``ValueError`` or ``TypeError``.
"""

from dsp.analysis import Analysis, EnvelopeResult, MachineInfo, analyse
from dsp.bearings import (
    BearingGeometry,
    DefectFrequencies,
    DefectOrders,
    bearing_by_model,
    defect_orders,
    known_bearings,
)
from dsp.diagnosis import Condition, Diagnosis
from dsp.envelope import (
    Band,
    Envelope,
    EnvelopeSpectrum,
    band_envelope,
    envelope_spectrum,
)
from dsp.lines import Line
from dsp.oil import (
    CleanlinessCode,
    ScaleNumber,
    cleanliness_code,
    count_range,
    saturation_ppm,
    scale_number,
    trend_slope_per_day,
    water_saturation_percent,
)
from dsp.orders import Order, Orders
from dsp.spectrum import MIN_SAMPLES, Spectrum, compute_spectrum
from dsp.time_domain import TimeDomain
from dsp.velocity import (
    ZONE_BOUNDARIES_MM_S,
    IsoZone,
    iso_zone,
    velocity_band_hz,
    velocity_rms_mm_s,
)

__all__ = [
    "MIN_SAMPLES",
    "ZONE_BOUNDARIES_MM_S",
    "Analysis",
    "Band",
    "BearingGeometry",
    "CleanlinessCode",
    "Condition",
    "DefectFrequencies",
    "DefectOrders",
    "Diagnosis",
    "Envelope",
    "EnvelopeResult",
    "EnvelopeSpectrum",
    "IsoZone",
    "Line",
    "MachineInfo",
    "Order",
    "Orders",
    "ScaleNumber",
    "Spectrum",
    "TimeDomain",
    "analyse",
    "band_envelope",
    "bearing_by_model",
    "cleanliness_code",
    "compute_spectrum",
    "count_range",
    "defect_orders",
    "envelope_spectrum",
    "iso_zone",
    "known_bearings",
    "saturation_ppm",
    "scale_number",
    "trend_slope_per_day",
    "velocity_band_hz",
    "velocity_rms_mm_s",
    "water_saturation_percent",
]
