"""Provider rule sets as frozen values: identity, addresses, acknowledgement, regime and ADR scheme."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, kw_only=True, slots=True)
class Scheme:
    """An ADR scheme (or independent reviewer); contact details live here once."""

    id: str
    name: str
    web: str
    phone: str
    email: str
    post: str
    free: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class AdrThreshold:
    """The ADR threshold for complaints first raised on local dates in [starts, ends)."""

    weeks: int
    starts: date | None
    ends: date | None

    def applies_to(self, first_raised: date) -> bool:
        return (self.starts is None or first_raised >= self.starts) and (
            self.ends is None or first_raised < self.ends
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Regime:
    id: str
    name: str
    referral_window_months: int
    adr_thresholds: tuple[AdrThreshold, ...]

    def adr_threshold_weeks(self, first_raised: date) -> int:
        for threshold in self.adr_thresholds:
            if threshold.applies_to(first_raised):
                return threshold.weeks
        raise ValueError(f"no ADR threshold in regime {self.id} covers {first_raised}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ProviderRules:
    id: str
    name: str
    reference_prefix: str
    complaints_address: str
    timezone: str
    holiday_region: str
    regime: Regime | None
    scheme: Scheme | None
    contact_point: str
    acknowledgement_template: str
    next_steps: str
