"""Purchase behaviour derived from the orders on a golden record's timeline.

Orders arrive as interactions of kind ``order`` (a shop's order stream, an order export). When a
golden record has any, its ``purchases`` unit is derived from them rather than taken from a
source's own summary, with rule ``derived from orders``; an admin's override still wins. Orders
stay on the timeline whatever their status; these count in no total:

* ``cancelled`` orders, and ``test`` orders (a shop's test checkouts);

and these rules make the figures comparable across sources:

* ``orders_count``, ``first_order_at`` and ``last_order_at`` cover every counted order;
* ``by_currency`` adds up what customers were charged, per currency they paid in;
* ``total_spent`` and ``average_order_value`` are in ``currency``, the seller's accounting
  currency (``base_currency`` of the orders, e.g. Shopify's shop currency; an order without a
  base amount counts with what was charged). Should a customer's orders come from sellers with
  different accounting currencies (two shops), the one most orders are in is used and orders in
  another count only in ``by_currency`` and ``orders_count``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

#: Order statuses that do not count as purchases.
NOT_PURCHASES = frozenset({"cancelled", "test"})
RULE = "derived from orders"
_CENT = Decimal("0.01")


def _decimal(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _money(value: Decimal) -> str:
    return str(value.quantize(_CENT))


def summarize(orders: Iterable[tuple[dict[str, Any], datetime]]) -> dict[str, Any] | None:
    """The purchase summary (JSON form of :class:`~synchub.schema.PurchaseSummary`) of
    ``orders``: ``(interaction data, occurred_at)`` pairs; ``orders_count: 0`` when none of
    them counts (all cancelled), None when there are none."""
    orders = list(orders)
    if not orders:
        return None
    counted: list[tuple[dict[str, Any], datetime]] = [
        (o, at) for o, at in orders if str(o.get("status") or "").lower() not in NOT_PURCHASES
    ]
    if not counted:
        return {"orders_count": 0}
    per_currency: dict[str, list[Decimal]] = {}
    base: dict[str, list[Decimal]] = {}
    for o, _at in counted:
        amount, currency = _decimal(o.get("amount")), o.get("currency")
        if amount is not None and currency:
            per_currency.setdefault(currency, []).append(amount)
        b_amount, b_currency = _decimal(o.get("base_amount")), o.get("base_currency")
        if b_amount is None or not b_currency:
            b_amount, b_currency = amount, currency
        if b_amount is not None and b_currency:
            base.setdefault(b_currency, []).append(b_amount)
    times = [at for _o, at in counted]
    summary: dict[str, Any] = {
        "orders_count": len(counted),
        "first_order_at": min(times).isoformat(),
        "last_order_at": max(times).isoformat(),
    }
    if base:
        # Most orders first; the alphabet breaks a tie, so the choice is the same every run.
        currency = sorted(Counter({c: len(v) for c, v in base.items()}).items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        total = sum(base[currency], Decimal(0))
        summary |= {"total_spent": _money(total), "currency": currency,
                    "average_order_value": _money(total / len(base[currency]))}
    if per_currency:
        summary["by_currency"] = {
            c: {"orders_count": len(v), "total_spent": _money(sum(v, Decimal(0))),
                "average_order_value": _money(sum(v, Decimal(0)) / len(v))}
            for c, v in sorted(per_currency.items())
        }
    return summary
