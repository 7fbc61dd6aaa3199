"""Sentiment of a contact's text: a small per-language lexicon, first version.

The event contract carries no sentiment, so the projectors compute it. This is deliberately
simple, pure and deterministic (a rebuild gives the same scores): lowercase words, a list of
positive and negative stems per language (it, pl, nl, tr, en), a negation word flips the next
two scored words. The score is ``(positive - negative) / (positive + negative)`` in [-1, 1];
0.0 when the text has no scored word; ``None`` when there is no text or the language is not one
of the five. A stem ending in ``*`` matches any word that starts with it (inflected languages:
``uszkodz*`` matches uszkodzona, uszkodzony ...).

Known limits of this first version: no sarcasm, no emoji, Turkish negation by suffix (-me/-ma)
is not seen, words outside the lists count for nothing. Replace it by a model later without
changing the read models: the score is one column (``contacts.sentiment``).
"""

from __future__ import annotations

import re
from functools import lru_cache

LANGUAGES = ("it", "pl", "nl", "tr", "en")

_LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "pos": (
            "thank*",
            "great",
            "good",
            "excellent",
            "love*",
            "happy",
            "perfect",
            "fast",
            "helpful",
            "appreciate*",
            "amazing",
            "satisfied",
            "recommend*",
            "quick*",
        ),
        "neg": (
            "broken",
            "cracked",
            "damaged",
            "bad",
            "terrible",
            "awful",
            "angry",
            "disappoint*",
            "late",
            "missing",
            "worst",
            "refund",
            "nobody",
            "never",
            "slow",
            "wrong",
            "useless",
            "complain*",
            "unacceptable",
            "again",
        ),
        "negators": ("not", "no", "never", "don't", "didn't", "isn't", "wasn't", "can't", "won't"),
    },
    "it": {
        "pos": (
            "grazie",
            "ottim*",
            "perfett*",
            "bell*",
            "brav*",
            "contento",
            "contenta",
            "soddisfatt*",
            "veloce",
            "gentil*",
            "consiglio",
            "fantastic*",
        ),
        "neg": (
            "rott*",
            "delus*",
            "pessim*",
            "danneggiat*",
            "ritardo",
            "mancante",
            "arrabbiat*",
            "rimborso",
            "vergogna",
            "inaccettabile",
            "lent*",
            "reclamo",
            "nessuno",
        ),
        "negators": ("non", "mai", "nessun"),
    },
    "pl": {
        "pos": (
            "dzięk*",
            "dziek*",
            "świetn*",
            "swietn*",
            "dobr*",
            "zadowolon*",
            "polecam",
            "szybk*",
            "super",
            "idealn*",
        ),
        "neg": (
            "uszkodz*",
            "zwrot*",
            "zły",
            "zła",
            "złe",
            "rozczarow*",
            "opóźni*",
            "brak*",
            "fataln*",
            "reklamacj*",
            "skandal*",
            "zepsut*",
            "drugi",
        ),
        "negators": ("nie", "nigdy", "żaden", "zaden"),
    },
    "nl": {
        "pos": (
            "bedankt",
            "dank*",
            "goed*",
            "geweldig*",
            "tevreden",
            "snel*",
            "prima",
            "top",
            "fijn*",
            "aanrader",
            "perfect",
        ),
        "neg": (
            "kapot*",
            "teleurgesteld*",
            "slecht*",
            "laat",
            "beschadigd*",
            "boos",
            "klacht*",
            "ontbreekt",
            "vertraging",
            "waardeloos",
            "tweede",
        ),
        "negators": ("niet", "geen", "nooit"),
    },
    "tr": {
        "pos": (
            "teşekkür*",
            "tesekkur*",
            "memnun*",
            "harika",
            "hızlı",
            "hizli",
            "güzel*",
            "guzel*",
            "mükemmel*",
            "mukemmel*",
            "süper",
            "super",
            "tavsiye*",
        ),
        "neg": (
            "eksik*",
            "kırık*",
            "kirik*",
            "bozuk*",
            "kötü*",
            "kotu*",
            "geç",
            "gec",
            "iade*",
            "şikayet*",
            "sikayet*",
            "rezalet*",
            "hasarl*",
            "ikinci",
        ),
        "negators": ("değil", "degil", "hiç", "hic", "yok"),
    },
}

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
NEGATION_REACH = 2  # a negator flips the scored words among the next two words


def language_of(tag: str | None) -> str | None:
    """The primary subtag of a BCP 47 tag if it is one of the five languages (it-IT → it)."""
    if not tag:
        return None
    primary = tag.strip().lower().replace("_", "-").split("-")[0]
    return primary if primary in LANGUAGES else None


@lru_cache(maxsize=None)
def _compiled(lang: str) -> tuple[frozenset, tuple, frozenset, tuple, frozenset]:
    lex = _LEXICON[lang]

    def split(words):
        exact = frozenset(w for w in words if not w.endswith("*"))
        stems = tuple(w[:-1] for w in words if w.endswith("*"))
        return exact, stems

    pos_exact, pos_stems = split(lex["pos"])
    neg_exact, neg_stems = split(lex["neg"])
    return pos_exact, pos_stems, neg_exact, neg_stems, frozenset(lex["negators"])


def _polarity(word: str, pos_exact, pos_stems, neg_exact, neg_stems) -> int:
    # str.startswith takes the tuple of stems whole: one C loop instead of a generator per word.
    if word in pos_exact or word.startswith(pos_stems):
        return 1
    if word in neg_exact or word.startswith(neg_stems):
        return -1
    return 0


NEGATOR = 2  # a word's class (``_class_of``) besides the polarities 1, -1 and 0
_KNOWN_MAX = 100_000  # words remembered per language (a word's class is computed once)


@lru_cache(maxsize=None)
def _known(lang: str) -> dict[str, int]:
    return {}


def _class_of(word: str, lang: str) -> int:
    """NEGATOR, or the polarity of ``word`` as written (casefolded here)."""
    pos_exact, pos_stems, neg_exact, neg_stems, negators = _compiled(lang)
    w = word.casefold()
    return NEGATOR if w in negators else _polarity(w, pos_exact, pos_stems, neg_exact, neg_stems)


def sentiment(text: str | None, language: str | None) -> float | None:
    """Score in [-1, 1] (see the module doc); None without text or for another language."""
    lang = language_of(language)
    if not text or lang is None:
        return None
    known = _known(lang)  # word as written → its class: texts repeat their words
    pos = neg = 0
    flip_left = 0
    for word in _WORD.findall(text):
        p = known.get(word)
        if p is None:
            p = _class_of(word, lang)
            if len(known) < _KNOWN_MAX:
                known[word] = p
        if p == NEGATOR:
            flip_left = NEGATION_REACH
            continue
        if flip_left:
            p = -p
            flip_left -= 1
        if p > 0:
            pos += 1
        elif p < 0:
            neg += 1
    if pos + neg == 0:
        return 0.0
    return round((pos - neg) / (pos + neg), 4)
