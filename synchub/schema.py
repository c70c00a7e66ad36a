"""The canonical customer schema: Person, Company and Interaction.

Every connector's records are mapped into these models (see :mod:`synchub.mapping`) and every
golden record is one of them. Values are already normalised when they get here (emails lower-case,
phones E.164, countries ISO 3166-1 alpha-2); display values are kept as given.

A golden record is stored as the JSON form of its model plus, for each *field unit* (see
:func:`field_units`), where its value came from: connection, source record id, observed-at time
and the rule that chose it.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, field_validator

ConsentStatus = Literal["subscribed", "unsubscribed", "pending", "cleaned", "never"]
#: How consent was captured. ``double_opt_in`` and ``form`` come from the person themselves.
ConsentMethod = Literal["double_opt_in", "form", "checkbox", "import", "admin", "api", "unknown"]
Channel = Literal["email", "sms", "phone", "post"]
LeadOrigin = Literal[
    "website_form", "shop", "trade_fair", "social", "email_campaign", "import", "referral",
    "event", "sales", "other",
]


class LifecycleStage(str, Enum):
    """Customer lifecycle, in order: a stage only moves forward when records merge."""

    subscriber = "subscriber"
    lead = "lead"
    marketing_qualified_lead = "marketing_qualified_lead"
    sales_qualified_lead = "sales_qualified_lead"
    opportunity = "opportunity"
    customer = "customer"
    evangelist = "evangelist"
    other = "other"


LIFECYCLE_ORDER = [s.value for s in LifecycleStage]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, validate_assignment=False)


class Address(_Model):
    street: str | None = None  # street and house number, as given
    line2: str | None = None  # c/o, building, floor
    postal_code: str | None = None
    city: str | None = None
    region: str | None = None
    country: Annotated[str | None, Field(pattern=r"^[A-Z]{2}$")] = None


class LeadSource(_Model):
    origin: LeadOrigin | None = None
    detail: str | None = None  # campaign, fair name, form name
    at: date | datetime | None = None


class Consent(_Model):
    status: ConsentStatus
    at: date | datetime | None = None
    method: ConsentMethod | None = None
    source: str | None = None  # where it was given: form name, list, connection


class CurrencySpend(_Model):
    """Orders paid in one currency (what the customer was charged)."""

    orders_count: Annotated[int, Field(ge=0)] = 0
    total_spent: Decimal = Decimal(0)
    average_order_value: Decimal | None = None


class PurchaseSummary(_Model):
    """Purchase behaviour. Given by a source (an export's "Umsatz" column), or derived by the hub
    from the order interactions on the record's timeline (see :mod:`synchub.purchases`)."""

    orders_count: Annotated[int, Field(ge=0)] | None = None
    #: In ``currency``: the seller's accounting currency (Shopify's shop currency).
    total_spent: Decimal | None = None
    currency: Annotated[str | None, Field(pattern=r"^[A-Z]{3}$")] = None
    average_order_value: Decimal | None = None
    first_order_at: date | datetime | None = None
    last_order_at: date | datetime | None = None
    #: Per currency the customer paid in (an order in CHF at a EUR shop counts under CHF here and,
    #: converted by the shop, in EUR in ``total_spent``).
    by_currency: dict[str, CurrencySpend] = Field(default_factory=dict)


class _Party(_Model):
    emails: list[str] = Field(default_factory=list)
    phones: list[str] = Field(default_factory=list)
    address: Address | None = None
    language: str | None = None
    lead_source: LeadSource | None = None
    consent: dict[Channel, Consent] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    lifecycle_stage: LifecycleStage | None = None
    custom: dict[str, Any] = Field(default_factory=dict)

    @field_validator("emails", "phones", "tags")
    @classmethod
    def _dedupe(cls, values: list[str]) -> list[str]:
        seen: dict[str, None] = {}
        for v in values:
            if v:
                seen.setdefault(v, None)
        return list(seen)


class Person(_Party):
    """A natural person (B2C customer, newsletter subscriber, B2B contact)."""

    kind: Literal["person"] = "person"
    salutation: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    birth_date: date | None = None
    job_title: str | None = None
    company_name: str | None = None
    company_id: str | None = None  # golden id of the Company this person works for
    purchases: PurchaseSummary | None = None

    @property
    def display_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p) or (
            self.emails[0] if self.emails else ""
        )


class Company(_Party):
    """An organisation (B2B account)."""

    kind: Literal["company"] = "company"
    name: str | None = None
    domain: str | None = None
    vat_id: str | None = None
    industry: str | None = None
    employee_count: Annotated[int, Field(ge=0)] | None = None
    purchases: PurchaseSummary | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.domain or ""


InteractionKind = Literal["order", "email_event", "form_submission", "note", "call", "meeting", "other"]


class LineItem(_Model):
    product: str | None = None
    sku: str | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None


class Interaction(_Model):
    """Something that happened with a customer, shown on their timeline."""

    kind: InteractionKind
    occurred_at: date | datetime
    summary: str | None = None
    #: What the customer was charged, in the currency they paid in.
    amount: Decimal | None = None
    currency: Annotated[str | None, Field(pattern=r"^[A-Z]{3}$")] = None
    #: The same amount in the seller's accounting currency (Shopify's ``shopMoney``), when the
    #: source converts it; purchase totals add these up.
    base_amount: Decimal | None = None
    base_currency: Annotated[str | None, Field(pattern=r"^[A-Z]{3}$")] = None
    #: ``cancelled`` and ``test`` orders stay on the timeline but count in no purchase total.
    status: str | None = None
    items: list[LineItem] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)


Entity = Annotated[Union[Person, Company], Field(discriminator="kind")]  # noqa: UP007
ENTITY_MODELS: dict[str, type[_Party]] = {"person": Person, "company": Company}


class Provenance(_Model):
    """Where one golden field value came from and why it won."""

    connection: str
    stream: str
    source_id: str
    observed_at: datetime
    rule: str | None = None
    losing: list[dict[str, Any]] = Field(default_factory=list)


# A field unit is what survivorship decides on as a whole: an address is taken from one source,
# never street from one and city from another. Consent is decided per channel, custom per key.
_WHOLE_UNITS = {"address", "lead_source", "purchases"}


def field_units(data: dict[str, Any]) -> dict[str, Any]:
    """Split a canonical record (its JSON dict) into survivorship units: ``{unit: value}``."""
    units: dict[str, Any] = {}
    for key, value in data.items():
        if key == "kind":
            continue
        if key in ("consent", "custom") and isinstance(value, dict):
            for sub, v in value.items():
                units[f"{key}.{sub}"] = v
        else:
            units[key] = value
    return units


def join_units(kind: str, units: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`field_units`."""
    data: dict[str, Any] = {"kind": kind}
    for key, value in units.items():
        if value is None or value == [] or value == {}:
            continue
        head, _, sub = key.partition(".")
        if sub and head in ("consent", "custom"):
            data.setdefault(head, {})[sub] = value
        else:
            data[key] = value
    return data


def canonical_paths(model: type[BaseModel] = Person, prefix: str = "") -> dict[str, Any]:
    """Every dotted path a mapping may write to, with its annotation (for config validation)."""
    paths: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if name == "kind":
            continue
        path = f"{prefix}{name}"
        ann = field.annotation
        paths[path] = ann
        sub = _submodel(ann)
        if sub is not None:
            paths.update(canonical_paths(sub, path + "."))
    if model in ENTITY_MODELS.values():
        for channel in ("email", "sms", "phone", "post"):
            for f in Consent.model_fields:
                paths[f"consent.{channel}.{f}"] = Consent.model_fields[f].annotation
        paths["custom.*"] = Any
    return paths


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if get_origin(annotation) in (dict, list):
        return None
    candidates = get_args(annotation) or (annotation,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None
