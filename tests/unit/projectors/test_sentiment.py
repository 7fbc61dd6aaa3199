"""The lexicon sentiment, first version: per language, negation, unknown languages."""

from __future__ import annotations

import pytest

from projectors.sentiment import language_of, sentiment


@pytest.mark.parametrize(
    "text, lang",
    [
        ("Il mio ordine è arrivato rotto, sono molto delusa.", "it"),
        ("Paczka przyszła uszkodzona, jestem rozczarowana.", "pl"),
        ("Mijn pakket is kapot aangekomen, ik ben teleurgesteld.", "nl"),
        ("Sipariş eksik geldi, kutu kırık.", "tr"),
        ("Order arrived with a cracked screen, terrible service.", "en"),
    ],
)
def test_a_complaint_scores_negative_in_each_of_the_five_languages(text, lang):
    assert sentiment(text, lang) < 0


@pytest.mark.parametrize(
    "text, lang",
    [
        ("Grazie mille, servizio ottimo!", "it"),
        ("Dziękuję, świetna obsługa, polecam.", "pl"),
        ("Bedankt, geweldig geholpen en snel.", "nl"),
        ("Hızlı kargo, çok memnun kaldım, teşekkürler!", "tr"),
        ("Thanks, great and helpful support.", "en"),
    ],
)
def test_praise_scores_positive_in_each_of_the_five_languages(text, lang):
    assert sentiment(text, lang) > 0


def test_a_negator_flips_the_word_after_it():
    assert sentiment("the service was good", "en") == 1.0
    assert sentiment("the service was not good", "en") == -1.0
    assert sentiment("non sono contenta", "it") == -1.0


def test_mixed_text_scores_between_the_extremes():
    assert sentiment("Thanks, but the parcel arrived broken and late", "en") == pytest.approx(-1 / 3, abs=1e-3)


def test_text_without_scored_words_is_neutral_and_no_text_or_another_language_is_unknown():
    assert sentiment("Can I change my delivery address?", "en") == 0.0
    assert sentiment(None, "en") is None
    assert sentiment("", "en") is None
    assert sentiment("Das Paket ist kaputt", "de") is None
    assert sentiment("broken", None) is None


def test_language_tags_are_reduced_to_their_primary_subtag():
    assert language_of("it-IT") == "it"
    assert language_of("NL_be") == "nl"
    assert language_of("de") is None
    assert language_of(None) is None


def test_the_score_is_deterministic():
    text = "Paczka 123 przyszła uszkodzona, dziękuję za szybką odpowiedź"
    assert sentiment(text, "pl") == sentiment(text, "pl")


def test_each_word_is_classified_once_and_the_cache_changes_no_score(monkeypatch):
    from projectors import sentiment as module

    text = "Non è perfetto, NON è Perfetto: il pacco è arrivato ROTTO e rotto"
    # scored with empty caches first: what the text gives without anything remembered
    monkeypatch.setattr(module, "_known", lambda lang, caches={}: caches.setdefault(lang, {}))
    first = sentiment(text, "it")
    calls = []
    classify = module._class_of
    monkeypatch.setattr(module, "_class_of", lambda word, lang: calls.append(word) or classify(word, lang))
    assert sentiment(text, "it") == first  # every word remembered: none classified again
    assert calls == []
    assert sentiment("ottimo ottimo OTTIMO", "it") == 1.0 and calls == ["ottimo", "OTTIMO"]  # as written, once
    assert sentiment("non ottimo", "it") == sentiment("NON OTTIMO", "it") == -1.0
