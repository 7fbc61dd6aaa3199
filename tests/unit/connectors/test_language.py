"""Language detection runs only where it can matter: not when the provider states the language,
not on an empty or short text, and once per text (a bounded LRU). A fake detector is injected
into the mapping context and counts what it is asked."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from connectors.base import MapContext, WebhookRequest
from connectors.normalize import LanguageDetector, language_sample, stated_language
from connectors.webhooks import handle
from fixtures.providers import SECRETS, body, headers

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
LANGS = ("en", "it", "pl", "nl", "tr")


class FakeDetect:
    """Answers ``answer`` for any text and remembers every text it was asked about."""

    def __init__(self, answer: str | None = "it"):
        self.answer, self.asked = answer, []

    def __call__(self, text: str) -> str | None:
        self.asked.append(text)
        return self.answer


def context(fake: FakeDetect, cache_size: int = 4096) -> MapContext:
    return MapContext(
        received_at=NOW, languages=LANGS, detector=LanguageDetector(LANGS, detect=fake, cache_size=cache_size)
    )


def mapped(connector: str, content: bytes, ctx: MapContext, hdrs: dict | None = None):
    url = f"http://testserver/webhooks/{connector}"
    out = handle(
        WebhookRequest(connector, url, hdrs or headers(connector, content, url), content, NOW), SECRETS, ctx, 1_000_000
    )
    assert out.status == 202 and len(out.contacts) == 1, out
    return out.contacts[0]


def chat(text: str | None, language: str | None = None, mid: str = "m-1") -> bytes:
    return json.dumps(
        {
            "message_id": mid,
            "session_id": "s-1",
            "visitor_id": "v-1",
            "sent_at": "2026-11-22T10:00:00Z",
            "sender": "visitor",
            "text": text,
            "login": {"email": "sanne@example.nl"},
            "language": language,
        }
    ).encode()


def test_a_text_without_a_stated_language_is_detected():
    fake = FakeDetect("nl")
    contact = mapped("chat", chat("Ik heb het formulier al ingevuld, waarom vragen jullie het opnieuw?"), context(fake))
    assert contact.language == "nl" and len(fake.asked) == 1


@pytest.mark.parametrize("stated,expected", [("nl", "nl"), ("nl-NL", "nl"), ("NL", "nl"), ("pt_BR", "pt")])
def test_a_language_the_provider_states_is_not_detected(stated, expected):
    fake = FakeDetect("it")
    contact = mapped(
        "chat", chat("Ik heb het formulier al ingevuld, waarom vragen jullie het opnieuw?", stated), context(fake)
    )
    assert contact.language == expected and fake.asked == []


def test_x_states_the_language_of_a_tweet():
    fake = FakeDetect("en")
    contact = mapped("x", body("x", "x_tweet.json"), context(fake))  # the fixture has "lang": "it"
    assert contact.language == "it" and fake.asked == []


def test_x_undetermined_language_falls_back_to_detection():
    fake = FakeDetect("it")
    tweet = json.loads(body("x", "x_tweet.json"))
    tweet["tweet_create_events"][0]["lang"] = "und"
    contact = mapped("x", json.dumps(tweet).encode(), context(fake))
    assert contact.language == "it" and len(fake.asked) == 1


def test_an_email_content_language_is_the_stated_language():
    fake = FakeDetect("en")
    raw = body("email", "email_reply.eml").replace(b"Subject:", b"Content-Language: it-IT\nSubject:", 1)
    contact = mapped("email", raw, context(fake))
    assert contact.language == "it" and fake.asked == []


@pytest.mark.parametrize("text", ["ok", "Grazie!", "👍👍", "ordine 100234", "   \n  ", "#4711 ?"])
def test_an_empty_or_short_text_is_not_detected(text):
    fake = FakeDetect("it")
    contact = mapped("chat", chat(text), context(fake))
    assert contact.language is None and fake.asked == []


def test_an_sms_with_an_empty_body_is_not_detected():
    fake = FakeDetect("it")
    content = body("twilio", "twilio_sms.json")
    content = b"&".join(p if not p.startswith(b"Body=") else b"Body=" for p in content.split(b"&"))
    contact = mapped("twilio", content, context(fake))
    assert contact.text is None and contact.language is None and fake.asked == []


def test_a_status_callback_without_text_is_not_detected():
    fake = FakeDetect("it")
    contact = mapped("twilio", body("twilio", "twilio_status.json"), context(fake))
    assert contact.text is None and contact.language is None and fake.asked == []


def test_the_same_text_is_detected_once_and_numbers_do_not_make_it_new():
    fake = FakeDetect("it")
    ctx = context(fake)
    for i, order in enumerate(("100234", "100234", "554433", "9")):
        contact = mapped("chat", chat(f"Il numero dell'ordine è {order}, potete aiutarmi?", mid=f"m-{i}"), ctx)
        assert contact.language == "it"
    assert len(fake.asked) == 1 and not any(ch.isdigit() for ch in fake.asked[0])


def test_the_cache_is_bounded_least_recently_used_first():
    fake = FakeDetect("en")
    detector = LanguageDetector(LANGS, detect=fake, cache_size=2)
    texts = ["first text to detect here", "second text to detect here", "third text to detect here"]
    for t in texts + [texts[2], texts[0]]:
        detector(t)
    # the third pushed the first out; asked again for the first, the detector runs again
    assert fake.asked == [t for t in texts] + [texts[0]]
    assert detector.cache_info().maxsize == 2 and detector.cache_info().currsize == 2


def test_a_long_text_is_shortened_before_detection():
    fake = FakeDetect("en")
    LanguageDetector(LANGS, detect=fake)("word " * 5000)
    assert len(fake.asked) == 1 and len(fake.asked[0]) <= 1000


@pytest.mark.parametrize(
    "value,expected",
    [
        ("it", "it"),
        ("it-IT", "it"),
        ("en_GB", "en"),
        ("zh-Hant-TW", "zh"),
        ("nl, en", "nl"),
        ("und", None),
        ("zxx", None),
        ("", None),
        (None, None),
        ("italian", None),
        ("i", None),
    ],
)
def test_stated_language_tags_become_iso_639_1(value, expected):
    assert stated_language(value) == expected


def test_language_sample_keeps_letters_and_drops_too_short_texts():
    assert language_sample("ordine 4711") is None and language_sample("ok ok") is None
    assert language_sample("Numer zamówienia to 554433, proszę o pomoc.") == "Numer zamówienia to  , proszę o pomoc."


def test_a_text_seen_before_is_answered_from_the_cache_without_being_examined_again():
    fake = FakeDetect("en")
    detector = LanguageDetector(LANGS, detect=fake)
    for text in ("ok ok", "ok ok", "first text to detect here", "first text to detect here 42"):
        detector(text)
    assert fake.asked == ["first text to detect here"]
    assert detector.cache_info().hits == 2  # the short text's repeat too: not measured again


def test_warm_loads_linguas_models_once_and_a_given_detector_is_left_alone(monkeypatch):
    from connectors import normalize

    built: list[tuple[str, ...]] = []
    monkeypatch.setattr(normalize, "_detector", lambda languages: built.append(languages))
    LanguageDetector(("en", "pl")).warm()
    LanguageDetector(("en", "pl"), detect=lambda text: "en").warm()
    assert built == [("en", "pl")]
