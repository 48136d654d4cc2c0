"""Models of the consent routes (shared/api/routes/consent.py): a driver's decision, an operator's decision on a
documented basis, and the state with its history. Request models forbid unknown fields and are strict about JSON
types, as the other models are; category names are checked against the catalogue (shared/privacy/categories.py),
so an unknown category is a 422 naming it, never a silently ignored key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.privacy.consent import MAX_BASIS, TERMS_VERSION


def _known(name: str) -> str:
    from shared.privacy.categories import default_categories

    if name not in default_categories().categories:
        raise ValueError(f"unknown data category; known: {', '.join(default_categories().names)}")
    return name


CategoryName = Annotated[str, AfterValidator(_known)]
Channel = Literal["car_screen", "companion_app", "api"]
TermsVersion = Annotated[
    str,
    Field(
        pattern=TERMS_VERSION.pattern,
        max_length=64,
        description="The version of the privacy terms the driver was shown (1-64 letters, digits, . _ : + -).",
        examples=["2026-11"],
    ),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- requests -------------------------------------------------------------------------------------------------


class ConsentDecision(_Request):
    """The driver's decision: categories left out keep their state; one that already says so records nothing."""

    categories: dict[CategoryName, bool] = Field(
        min_length=1,
        max_length=64,
        description="Data category → true (grant) or false (withdraw).",
        examples=[{"position": False, "navigation_destination": False}],
    )
    channel: Channel = Field(description="Where the driver decided: the car's screen, the companion app or the API.")
    termsVersion: TermsVersion


class OperatorConsentDecision(ConsentDecision):
    """A decision an operator records for the car's driver, on a documented basis (a signed form, a call)."""

    basis: str = Field(
        min_length=1,
        max_length=MAX_BASIS,
        pattern=r"\S",
        description="What documents the driver's decision (kept in the record, shown to the driver and the car).",
        examples=["signed consent form 2026-114, fleet office Berlin"],
    )


# --- responses ------------------------------------------------------------------------------------------------


class RecordedBy(_Response):
    kind: Literal["driver", "operator"]
    objectId: str | None = Field(None, description="Entra object id of the driver or operator.")
    tenantId: str | None = None


class ConsentRecord(_Response):
    """One append-only record: one category of one decision."""

    category: str
    granted: bool
    at: str
    by: RecordedBy
    channel: Channel
    termsVersion: str | None = Field(None, description="null for decisions made without terms (PATCH, links).")
    basis: str | None = Field(None, description="An operator's documented basis.")
    requestId: str | None = Field(None, description="The car request that carried the decision.")
    via: str | None = Field(None, description="driverLink: the choice made when the driver linked the car.")
    seq: int = Field(description="The decision's number for this driver, car and category (1, 2, ...).")


class CategoryConsent(_Response):
    category: str
    basis: Literal["consent", "contract"] = Field(description="The brand's legal basis for the category.")
    collected: bool = Field(description="Whether the platform collects the category for this car now.")
    source: Literal["record", "basis"] = Field(description="record: the driver's latest decision; basis: none.")
    granted: bool | None = None
    at: str | None = None
    by: RecordedBy | None = None
    channel: Channel | None = None
    termsVersion: str | None = None


class ConsentState(_Response):
    vehicleId: str
    userId: str | None = Field(description="The car's driver; null: no driver, every category follows its basis.")
    categories: list[CategoryConsent] = Field(description="Every data category, in catalogue order.")
    history: list[ConsentRecord] = Field(description="The current driver's records for this car, newest first.")


class ConsentRecorded(ConsentState):
    recorded: int = Field(description="Records this call appended (0: the state already said so).")
    removed: int = Field(description="Values of now withheld categories removed from the car's stored state.")


def example() -> dict[str, Any]:
    """A body for docs and tests."""
    return {"categories": {"position": False}, "channel": "companion_app", "termsVersion": "2026-11"}
