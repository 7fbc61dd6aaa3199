"""Shopify ``orders/create`` (``/webhooks/shopify``), signed with ``X-Shopify-Hmac-Sha256``
(base64 HMAC-SHA256 of the raw body with the app's webhook secret).

An order is a ``store`` contact with ``event_type`` ``order.created``: purchase history the agent
sees. Identities: the order's email (primary), the buyer's phone (the order's, the customer
record's, else the billing address's), any other phone of the shipping or billing address as
``hint`` strength (whoever receives the parcel may be someone else: identity resolution links
hints only when configured to), the Shopify customer id (``account``, platform shopify). Facts: the order number and name, the shipping
address, the items. ``buyer_accepts_marketing`` / ``customer.email_marketing_consent`` become
consent signals. Other topics (``X-Shopify-Topic``) go to the DLQ.
"""

from __future__ import annotations

from connectors.base import Connector, MapContext, Mapped, Rejected, WebhookRequest, build_contact, json_body, require
from connectors.errors import MalformedPayload, Unmappable
from connectors.normalize import account_identity, dedupe_identities, email_identity, parse_time, phone_identity
from connectors.signatures import same, shopify_hmac

NAME = "shopify"


def verify(req: WebhookRequest, secret: str) -> bool:
    return same(req.headers.get("x-shopify-hmac-sha256"), shopify_hmac(req.body, secret))


def parse(req: WebhookRequest, ctx: MapContext) -> Mapped:
    topic = req.headers.get("x-shopify-topic", "")
    order = json_body(req)
    if not isinstance(order, dict):
        raise MalformedPayload("<body>", "expected a JSON object")
    if topic != "orders/create":
        return [Rejected(f"unsupported shopify topic {topic or '(none)'!r}", req.body)]
    require(order, "id", (int, str))
    require(order, "created_at")
    try:
        return [order_created(order, req.headers.get("x-shopify-shop-domain"), ctx)]
    except Unmappable as exc:
        return [Rejected(exc.reason, req.body)]


def order_created(order: dict, shop: str | None, ctx: MapContext):
    customer = _object(order.get("customer"))
    billing = _object(order.get("billing_address"))
    shipping = _object(order.get("shipping_address"))
    region = billing.get("country_code") or shipping.get("country_code") or ctx.region
    idents = dedupe_identities(
        [
            email_identity(order.get("email") or order.get("contact_email") or customer.get("email"), primary=True),
            # the buyer's phone: the order's, the customer record's, else the billing address's (who pays)
            phone_identity(
                order.get("phone") or customer.get("phone") or billing.get("phone"),
                billing.get("country_code") or region,
            ),
            *(
                phone_identity(address.get("phone"), address.get("country_code") or region, strength="hint")
                for address in (shipping, billing)
            ),
            account_identity(customer.get("id"), "shopify", strength="verified"),
        ]
    )
    number = str(order.get("order_number") or order.get("number") or order["id"])
    facts = [{"kind": "order_number", "value": number, "source": "shopify"}]
    if order.get("name"):
        facts.append({"kind": "order_name", "value": str(order["name"]), "source": "shopify"})
    if shipping:
        addr = ", ".join(
            str(shipping[k]) for k in ("address1", "address2", "zip", "city", "country") if shipping.get(k)
        )
        if addr:
            facts.append({"kind": "shipping_address", "value": addr, "source": "shopify"})
    for item in order.get("line_items") or []:
        if isinstance(item, dict) and item.get("title"):
            facts.append({"kind": "item", "value": f"{item.get('quantity', 1)}× {item['title']}", "source": "shopify"})
    consent = []
    emc = customer.get("email_marketing_consent")
    if isinstance(emc, dict) and emc.get("state"):
        consent.append(
            {
                "purpose": "marketing",
                "channel": "email",
                "granted": emc["state"] == "subscribed",
                "source": "shopify.customer",
            }
        )
    elif "buyer_accepts_marketing" in order:
        consent.append(
            {
                "purpose": "marketing",
                "channel": "email",
                "granted": bool(order["buyer_accepts_marketing"]),
                "source": "shopify.checkout",
            }
        )
    name = " ".join(x for x in (customer.get("first_name"), customer.get("last_name")) if x) or None
    return build_contact(
        {
            "provider_id": str(order["id"]),
            "connector": NAME,
            "channel": "store",
            "direction": "inbound",
            "event_type": "order.created",
            "occurred_at": parse_time(order["created_at"], "created_at"),
            "actor": {"role": "customer", "department": "sales", "display_name": name},
            "identities": idents,
            "subject": f"Order {order.get('name') or number}",
            "facts": facts,
            "consent": consent,
            "language": (order.get("customer_locale") or "")[:2] or None,
            "metadata": {k: str(order[k]) for k in ("total_price", "currency", "financial_status") if order.get(k)}
            | ({"shop": shop} if shop else {}),
        },
        ctx,
    )


def _object(value) -> dict:
    """A nested object of the order, or {} when it is missing or not an object."""
    return value if isinstance(value, dict) else {}


CONNECTOR = Connector(NAME, ("application/json",), "shopify_webhook_secret", verify, parse, doc="Shopify orders/create")
