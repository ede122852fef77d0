"""Rolling-element bearing geometry and its kinematic defect frequencies.

Catalogue source: Case Western Reserve University Bearing Data Center,
"Apparatus & Procedures" page (https://engineering.case.edu/bearingdatacenter),
which lists the SKF 6205-2RS JEM (drive end) and 6203-2RS JEM (fan end)
deep-groove ball bearings of its test rig with ball count, ball diameter
and pitch diameter. Other models are left out rather than guessed; pass
their geometry explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True, kw_only=True)
class BearingGeometry:
    """Geometry of a rolling-element bearing.

    Diameters share one unit (only their ratio matters); the contact
    angle is in degrees, 0 for a deep-groove ball bearing under radial load.
    """

    balls: int
    ball_diameter: float
    pitch_diameter: float
    contact_angle_deg: float = 0.0
    model: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.balls, bool) or not isinstance(self.balls, int):
            raise TypeError(f"balls must be an int, found {self.balls!r}")
        if self.balls < 3:
            raise ValueError(f"balls must be at least 3, found {self.balls}")
        if not 0 < self.ball_diameter < self.pitch_diameter:
            raise ValueError(
                "need 0 < ball_diameter < pitch_diameter, found "
                f"ball_diameter={self.ball_diameter!r}, "
                f"pitch_diameter={self.pitch_diameter!r}"
            )
        if not 0 <= self.contact_angle_deg < 90:
            raise ValueError(
                "contact_angle_deg must be in [0, 90), found "
                f"{self.contact_angle_deg!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class DefectOrders:
    """Defect frequencies as multiples of the shaft (inner ring) speed."""

    ftf: float
    bpfo: float
    bpfi: float
    bsf: float

    def in_hz(self, shaft_hz: float) -> DefectFrequencies:
        """Scale the orders to Hz at a shaft speed of ``shaft_hz``."""
        return DefectFrequencies(
            shaft_hz=shaft_hz,
            orders=self,
            ftf_hz=self.ftf * shaft_hz,
            bpfo_hz=self.bpfo * shaft_hz,
            bpfi_hz=self.bpfi * shaft_hz,
            bsf_hz=self.bsf * shaft_hz,
            two_bsf_hz=2.0 * self.bsf * shaft_hz,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DefectFrequencies:
    """Defect frequencies in Hz at one shaft speed, with their orders."""

    shaft_hz: float
    orders: DefectOrders
    ftf_hz: float
    bpfo_hz: float
    bpfi_hz: float
    bsf_hz: float
    two_bsf_hz: float


def defect_orders(geometry: BearingGeometry) -> DefectOrders:
    """Compute the defect frequencies of a bearing per shaft revolution.

    Notes
    -----
    With ``n`` balls, ball diameter ``d``, pitch diameter ``D``, contact
    angle ``a`` and ``r = d cos(a) / D``, for a rotating inner ring and a
    stationary outer ring, and rolling without slip:

    - FTF (cage) ``(1 - r) / 2``
    - BPFO (outer race) ``n (1 - r) / 2``
    - BPFI (inner race) ``n (1 + r) / 2``
    - BSF (ball spin) ``D / (2 d) (1 - r**2)``; a ball defect strikes both
      races once per spin, so its envelope line is often ``2 * BSF``.

    Real bearings slip by 1 to 2 %, so measured lines sit slightly low.
    """
    ratio = (
        geometry.ball_diameter
        * math.cos(math.radians(geometry.contact_angle_deg))
        / geometry.pitch_diameter
    )
    return DefectOrders(
        ftf=0.5 * (1.0 - ratio),
        bpfo=0.5 * geometry.balls * (1.0 - ratio),
        bpfi=0.5 * geometry.balls * (1.0 + ratio),
        bsf=geometry.pitch_diameter
        / (2.0 * geometry.ball_diameter)
        * (1.0 - ratio * ratio),
    )


_CATALOGUE: Final[dict[str, BearingGeometry]] = {
    "6205": BearingGeometry(
        model="6205",
        balls=9,
        ball_diameter=0.3126,
        pitch_diameter=1.537,
        contact_angle_deg=0.0,
    ),
    "6203": BearingGeometry(
        model="6203",
        balls=8,
        ball_diameter=0.2656,
        pitch_diameter=1.122,
        contact_angle_deg=0.0,
    ),
}


def known_bearings() -> list[str]:
    """Return the bearing models in the catalogue, sorted."""
    return sorted(_CATALOGUE)


def bearing_by_model(name: str) -> BearingGeometry:
    """Look a bearing up by model, ignoring case, spaces and suffixes.

    ``"6205"``, ``"SKF 6205"`` and ``"6205-2RS JEM"`` all find the 6205:
    seals and clearance suffixes do not change the rolling geometry.

    Raises
    ------
    KeyError
        If no catalogue entry matches; the message lists the known models.
    """
    key = name.strip().upper().removeprefix("SKF").strip().split("-")[0]
    key = key.split(" ")[0]
    try:
        return _CATALOGUE[key]
    except KeyError:
        raise KeyError(
            f"unknown bearing model {name!r}; known models: {known_bearings()}"
        ) from None
