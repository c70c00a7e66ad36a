"""The canonical customer schema: Person, Company and Interaction.

Every connector's records are mapped into these models (see :mod:`synchub.mapping`) and every
golden record is one of them. Values are already normalised when they get here (emails lower-case,
phones E.164, countries ISO 3166-1 alpha-2); display values are kept as given.

A golden record is stored as the JSON form of its model plus, for each *field unit* (see
:func:`field_units`), where its value came from: connection, source record id, observed-at time
and the rule that chose it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from pydantic_core import PydanticUndefined

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


# ---------------------------------------------------------------------------------------------
# Fast validate-and-dump
# ---------------------------------------------------------------------------------------------
# ``model.model_validate(data).model_dump(mode="json", exclude_none=True, exclude_defaults=True)``
# costs some 30 µs for a mapped shop record, most of it building and dumping model instances
# that nobody keeps. :func:`fast_dump` goes from the dict straight to that JSON form. It is a
# shortcut, never a second set of rules: every value it is not sure about (a type other than
# the plain ones, whitespace to strip, a value the model would refuse, an unknown key) makes it
# answer None, and the caller validates the usual way. Leaves other than plain strings go
# through pydantic itself (a TypeAdapter of the field's own annotation and the model's config),
# remembered per distinct value, so dates, decimals, literals, enums and patterns follow
# pydantic's rules exactly. ``tests/test_prepare_equivalence.py`` and
# ``bench/prepare_corpus.py`` compare both ways on large corpora.


class _Unsure(Exception):
    """The fast path cannot vouch for this value: validate the usual way."""


_NOT_GIVEN = object()
_CACHE_MAX = 65536
#: How a field's absence from the dump is decided (exclude_none / exclude_defaults).
_D_NONE, _D_EMPTY, _D_REQUIRED, _D_VALUE = range(4)
_CONFIG_KEYS = {"extra", "str_strip_whitespace", "validate_assignment"}
_DECORATOR_KINDS = ("validators", "root_validators", "field_serializers", "model_serializers",
                    "model_validators", "computed_fields")


def _is_union(ann: Any) -> bool:
    return get_origin(ann) in (Union, UnionType)


def _optional_inner(ann: Any) -> Any:
    """``X | None`` -> ``X``; anything else as is."""
    if _is_union(ann):
        args = get_args(ann)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return rest[0]
    return ann


def _surrogate_free(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # pydantic refuses lone surrogates (string_unicode)
        return False
    return True


class _Leaf:
    """A scalar field validated and serialised by pydantic, remembered per distinct str/int value."""

    __slots__ = ("_int", "_serialize", "_str", "_validate")

    def __init__(self, annotation: Any, metadata: list[Any], config: ConfigDict):
        adapter = TypeAdapter(Annotated[(annotation, *metadata)] if metadata else annotation, config=config)
        self._validate = adapter.validator.validate_python
        self._serialize = adapter.serializer.to_python
        self._str: dict[str, tuple[Any, Any]] = {}
        self._int: dict[int, tuple[Any, Any]] = {}

    def pair(self, value: Any) -> tuple[Any, Any]:
        """``(python value, JSON value)``; raises :class:`_Unsure` when pydantic refuses it."""
        kind = type(value)
        cache = self._str if kind is str else self._int if kind is int else None
        if cache is not None:
            hit = cache.get(value)
            if hit is not None:
                return hit
        try:
            py = self._validate(value)
            js = self._serialize(py, mode="json")
        except Exception:  # a ValidationError, or anything else pydantic would report
            raise _Unsure from None
        if js is None and py is not None:  # NaN and the like: not worth a rule of their own
            raise _Unsure
        out = (py, js)
        if cache is not None:
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[value] = out
        return out

    def json(self, value: Any) -> Any:
        if type(value) is str:
            hit = self._str.get(value)
            if hit is not None:
                return hit[1]
        return self.pair(value)[1]


class _Str:
    """A plain ``str`` field: a str without surrounding whitespace (which the model would strip)
    and without lone surrogates is its own JSON form; anything else goes to pydantic."""

    __slots__ = ("_leaf", "_strip")

    def __init__(self, annotation: Any, config: ConfigDict):
        self._leaf = _Leaf(annotation, [], config)
        self._strip = bool(config.get("str_strip_whitespace"))

    def json(self, value: Any) -> Any:
        # str.strip() takes all that pydantic's strip takes (Rust's White_Space) and \x1c-\x1f.
        if type(value) is str and (not self._strip or value.strip() == value) and \
                (value.isascii() or _surrogate_free(value)):
            return value
        return self._leaf.json(value)

    def pair(self, value: Any) -> tuple[Any, Any]:
        js = self.json(value)
        return js, js


class _ListOf:
    """``list[X]``, then the field's ``mode="after"`` validators (the parties' de-duplication)."""

    __slots__ = ("_after", "_item")

    def __init__(self, item: Any, after: list[Callable[[Any], Any]]):
        self._item = item
        self._after = after

    def json(self, value: Any) -> Any:
        if type(value) is not list:
            raise _Unsure
        item = self._item.json
        out = [item(v) for v in value]
        for fn in self._after:
            try:
                out = fn(out)
            except Exception:  # pydantic would report it: let it
                raise _Unsure from None
            if type(out) is not list or any(type(v) is not str for v in out):
                raise _Unsure
        return out


class _DictOf:
    """``dict[K, V]``: keys and values validated like the model does, in the input's order."""

    __slots__ = ("_key", "_value")

    def __init__(self, key: Any, value: Any):
        self._key = key
        self._value = value

    def json(self, value: Any) -> Any:
        if type(value) is not dict:
            raise _Unsure
        key, val = self._key.json, self._value.json
        out = {}
        for k, v in value.items():
            jk = key(k)
            if type(jk) is not str:
                raise _Unsure
            out[jk] = val(v)
        return out


class _AnyScalar:
    """An ``Any`` value: plain JSON scalars pass as they are (None included, as pydantic keeps
    them inside a dict); containers and other objects go the usual way."""

    __slots__ = ()

    def json(self, value: Any) -> Any:
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            return value
        if kind is float and value - value == 0:  # finite
            return value
        raise _Unsure


class _Never:
    """A field the fast path does not know: its presence sends the record the usual way."""

    __slots__ = ()

    def json(self, value: Any) -> Any:
        raise _Unsure

    def pair(self, value: Any) -> tuple[Any, Any]:
        raise _Unsure


class _ModelPlan:
    """One model: fields in the model's order, each with its converter and exclusion rule."""

    __slots__ = ("_layouts", "fields", "known", "required", "usable")

    def __init__(self, model: type[BaseModel]):
        self.usable = _plannable(model)
        config = ConfigDict(**{k: v for k, v in model.model_config.items() if k == "str_strip_whitespace"})
        validators: dict[str, list[Any]] = {}
        for dec in model.__pydantic_decorators__.field_validators.values():
            for name in dec.info.fields:
                validators.setdefault(name, []).append(dec)
        self.fields: list[tuple[str, Any, int, Any]] = []
        required = set()
        for name, info in model.model_fields.items():
            conv = _converter(info, validators.get(name, []), config)
            if info.default_factory is not None:
                mode = _D_EMPTY if info.default_factory in (list, dict) else -1
                default = None
            elif info.default is PydanticUndefined:
                mode, default = _D_REQUIRED, None
                required.add(name)
            elif info.default is None:
                mode, default = _D_NONE, None
            else:
                mode, default = _D_VALUE, info.default
                if not hasattr(conv, "pair"):
                    mode = -1
            if mode == -1 or info.alias or info.validation_alias or info.serialization_alias or info.exclude:
                conv, mode = _Never(), _D_NONE
            self.fields.append((name, conv, mode, default))
        self.known = frozenset(model.model_fields)
        self.required = frozenset(required)
        #: Per sequence of input keys: the fields to convert, in the model's order (None: an
        #: unknown key or a required field missing).
        self._layouts: dict[tuple[Any, ...], list[tuple[str, Any, int, Any]] | None] = {}

    def _layout(self, keys: tuple[Any, ...]) -> list[tuple[str, Any, int, Any]] | None:
        layout = None
        if self.known.issuperset(keys) and self.required.issubset(keys):
            present = set(keys)
            layout = []
            for name, conv, mode, default in self.fields:
                if name in present:
                    if mode == _D_VALUE:
                        layout.append((name, conv.pair, 2, default))
                    else:
                        layout.append((name, conv.json, 1 if mode == _D_EMPTY else 0, default))
        if len(self._layouts) >= 4096:
            self._layouts.clear()
        self._layouts[keys] = layout
        return layout

    def json(self, data: Any) -> dict[str, Any]:
        if type(data) is not dict:
            raise _Unsure
        keys = tuple(data)
        layout = self._layouts.get(keys, _NOT_GIVEN)
        if layout is _NOT_GIVEN:
            layout = self._layout(keys)
        if layout is None:
            raise _Unsure
        out: dict[str, Any] = {}
        # Each converter takes None too: None where the field allows it (exclude_none drops it),
        # _Unsure where it does not.
        for name, conv, how, default in layout:
            if how == 0:  # default None, or required: exclude_none
                js = conv(data[name])
                if js is not None:
                    out[name] = js
            elif how == 1:  # default [] or {}: exclude_defaults
                js = conv(data[name])
                if js:
                    out[name] = js
            else:  # another default: compared as pydantic does, on the validated value
                py, js = conv(data[name])
                if py is not None and not (py == default):
                    out[name] = js
        return out


def _plannable(model: type[BaseModel]) -> bool:
    config = model.model_config
    if not set(config) <= _CONFIG_KEYS or config.get("extra") != "forbid":
        return False
    decorators = model.__pydantic_decorators__
    return not any(getattr(decorators, kind, None) for kind in _DECORATOR_KINDS)


_PLANS: dict[type[BaseModel], _ModelPlan] = {}


def _plan(model: type[BaseModel]) -> _ModelPlan:
    plan = _PLANS.get(model)
    if plan is None:
        plan = _PLANS[model] = _ModelPlan(model)
    return plan


class _Nested:
    """A field holding another model (``X`` or ``X | None``)."""

    __slots__ = ("_model", "_nullable", "_plan")

    def __init__(self, model: type[BaseModel], nullable: bool = False):
        self._model = model
        self._nullable = nullable
        self._plan: _ModelPlan | None = None  # resolved on first use: models may refer ahead

    def json(self, value: Any) -> Any:
        if value is None:
            if self._nullable:
                return None
            raise _Unsure
        plan = self._plan
        if plan is None:
            plan = self._plan = _plan(self._model)
        if not plan.usable:
            raise _Unsure
        return plan.json(value)


def _converter(info: Any, validators: list[Any], config: ConfigDict) -> Any:
    ann, metadata = info.annotation, list(info.metadata)
    inner = _optional_inner(ann)
    nullable = inner is not ann
    after: list[Callable[[Any], Any]] = []
    for dec in validators:
        if dec.info.mode != "after" or len(inspect.signature(dec.func).parameters) != 1:
            return _Never()
        after.append(dec.func)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        if metadata or after:
            return _Never()
        return _Nested(inner, nullable)
    origin = get_origin(inner)
    if origin is list and not nullable and not metadata:
        (item,) = get_args(inner) or (Any,)
        if item is str:
            return _ListOf(_Str(str, config), after)
        if isinstance(item, type) and issubclass(item, BaseModel) and not after:
            return _ListOf(_Nested(item), [])
        return _Never()
    if after:
        return _Never()
    if origin is dict and not nullable and not metadata:
        key, value = get_args(inner) or (Any, Any)
        if key is str:
            kconv: Any = _Str(str, config)
        elif get_origin(key) is Literal:
            kconv = _Leaf(key, [], config)
        else:
            return _Never()
        if value is Any:
            return _DictOf(kconv, _AnyScalar())
        if isinstance(value, type) and issubclass(value, BaseModel):
            return _DictOf(kconv, _Nested(value))
        return _Never()
    if origin in (list, dict, set, frozenset, tuple) or inner is Any:
        return _Never()
    if inner is str and not metadata:
        return _Str(ann, config)
    return _Leaf(ann, metadata, config)


def forget_values() -> None:
    """Empty the values remembered per leaf (benchmarks measure from cold with it)."""
    for plan in _PLANS.values():
        for _name, conv, _mode, _default in plan.fields:
            for leaf in _leaves(conv):
                leaf._str.clear()
                leaf._int.clear()


def _leaves(conv: Any) -> Iterator[_Leaf]:
    if isinstance(conv, _Leaf):
        yield conv
    elif isinstance(conv, _Str):
        yield conv._leaf
    elif isinstance(conv, _ListOf):
        yield from _leaves(conv._item)
    elif isinstance(conv, _DictOf):
        yield from _leaves(conv._key)
        yield from _leaves(conv._value)


def fast_dump(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any] | None:
    """``model.model_validate(data).model_dump(mode="json", exclude_none=True,
    exclude_defaults=True)`` when the fast path is sure of every value and the data is valid;
    None otherwise (then nothing has been changed: validate the usual way). ``data`` is never
    modified."""
    plan = _plan(model)
    if not plan.usable:
        return None
    try:
        return plan.json(data)
    except _Unsure:
        return None
