"""Twilio Voice (``POST /webhooks/twilio-voice``): call status callbacks, transcriptions and IVR
menu selections, form-encoded (or JSON with ``bodySHA256``) and signed with ``X-Twilio-Signature``
like messaging.

* call status callback (``CallSid``, ``CallStatus``, ``Direction``, ``From``, ``To``,
  ``Timestamp`` in RFC 2822, ``CallDuration``, ``SequenceNumber``) -> a ``voice`` contact per
  call status (``contact.received`` for the first, ``contact.status_changed`` after);
* transcription callback (``TranscriptionSid``, ``TranscriptionText``, ``TranscriptionStatus``,
  ``RecordingSid``, ``CallSid``) -> the caller's words as a ``voice`` contact;
* ``<Gather>`` action (``Digits`` and/or ``SpeechResult`` on a call) -> an ``ivr`` contact with
  the menu choice in ``metadata.menu_choice``.

The customer is the caller for inbound calls and the callee for outbound ones.
"""

from __future__ import annotations

from connectors import twilio
from connectors.base import Connector, MapContext, Mapped, Rejected, WebhookRequest, build_contact
from connectors.errors import MalformedPayload, Unmappable
from connectors.normalize import parse_time, phone_identity

NAME = "twilio-voice"
CALL_STATUSES = {
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
    "answered",
}


def _customer(params: dict[str, str], ctx: MapContext):
    direction = "outbound" if params.get("Direction", "inbound").startswith("outbound") else "inbound"
    number = params.get("To") if direction == "outbound" else params.get("From")
    ident = phone_identity(number, ctx.region, primary=True, strength="verified")
    if ident is None:
        raise Unmappable(f"{'To' if direction == 'outbound' else 'From'} is not a valid phone number")
    return direction, ident


def _when(params: dict[str, str], ctx: MapContext):
    if params.get("Timestamp"):
        return parse_time(params["Timestamp"], "Timestamp"), "provider"
    if ctx.received_at is None:
        raise Unmappable("no Timestamp and no arrival time")
    return ctx.received_at, "received"


def parse(req: WebhookRequest, ctx: MapContext) -> Mapped:
    params = dict(twilio.params_of(req))
    call_sid = params.get("CallSid")
    if not call_sid:
        raise MalformedPayload("CallSid", "missing")
    try:
        if params.get("TranscriptionSid"):
            return [transcription(params, call_sid, ctx)]
        if "Digits" in params or "SpeechResult" in params:
            return [ivr(params, call_sid, ctx)]
        if params.get("CallStatus"):
            return [call_status(params, call_sid, ctx)]
        raise Unmappable("not a call status, transcription or gather callback")
    except Unmappable as exc:
        return [Rejected(exc.reason, req.body)]


def call_status(params, call_sid, ctx):
    status = params["CallStatus"]
    if status not in CALL_STATUSES:
        raise Unmappable(f"unknown CallStatus {status!r}")
    direction, ident = _customer(params, ctx)
    when, source = _when(params, ctx)
    first = status in ("ringing", "initiated", "queued")
    meta = {"status": status, "occurred_at_source": source, "twilio_direction": params.get("Direction", "")}
    for key, name in (("CallDuration", "duration_s"), ("SequenceNumber", "sequence"), ("CallerName", "caller_name")):
        if params.get(key):
            meta[name] = params[key]
    return build_contact(
        {
            "provider_id": f"{call_sid}:{status}",
            "connector": NAME,
            "channel": "voice",
            "direction": direction,
            "event_type": "contact.received" if first else "contact.status_changed",
            "occurred_at": when,
            "actor": {"role": "customer" if direction == "inbound" else "agent"},
            "identities": [ident],
            "thread": {"call_id": call_sid},
            "metadata": meta,
        },
        ctx,
    )


def transcription(params, call_sid, ctx):
    if params.get("TranscriptionStatus", "completed") != "completed":
        raise Unmappable(f"transcription {params.get('TranscriptionStatus')}: no text")
    direction, ident = _customer(params, ctx)
    when, source = _when(params, ctx)
    attachments = [{"url": params["RecordingUrl"], "content_type": "audio/x-wav"}] if params.get("RecordingUrl") else []
    return build_contact(
        {
            "provider_id": params["TranscriptionSid"],
            "connector": NAME,
            "channel": "voice",
            "direction": direction,
            "occurred_at": when,
            "actor": {"role": "customer" if direction == "inbound" else "agent"},
            "identities": [ident],
            "text": params.get("TranscriptionText") or None,
            "attachments": attachments,
            "thread": {"call_id": call_sid, "message_id": params.get("RecordingSid")},
            "metadata": {"occurred_at_source": source, "kind": "transcription"},
        },
        ctx,
    )


def ivr(params, call_sid, ctx):
    direction, ident = _customer(params, ctx)
    when, source = _when(params, ctx)
    choice = params.get("Digits") or ""
    speech = params.get("SpeechResult") or None
    meta = {"menu_choice": choice, "occurred_at_source": source}
    return build_contact(
        {
            "provider_id": f"{call_sid}:gather:{choice}:{speech or ''}",
            "connector": NAME,
            "channel": "ivr",
            "direction": "inbound",
            "occurred_at": when,
            "actor": {"role": "customer"},
            "identities": [ident],
            "text": speech,
            "thread": {"call_id": call_sid},
            "metadata": meta,
        },
        ctx,
    )


CONNECTOR = Connector(
    NAME,
    twilio.MEDIA_TYPES,
    "twilio_auth_token",
    twilio.verify,
    parse,
    doc="Twilio Voice: call status callbacks, transcriptions, IVR <Gather> selections",
)
