"""Finding PII in text: Microsoft Presidio's analyzer, set up to run offline.

Presidio's pattern recognizers (email, phone, credit card, IBAN, IP address, ...) need no language
model: they are regular expressions with checksums and validators (Luhn for cards, the IBAN check
digits, `phonenumbers` for phones). Presidio's default set-up loads a spaCy model for person names and
context words, and the official spaCy models are not on the package index, so the analyzer here runs
with Presidio's no-op NLP engine and only the pattern recognizers, plus the user's own:

- `pii.patterns`: an entity name -> a regular expression (a Presidio `PatternRecognizer`);
- `pii.deny_lists`: an entity name -> words that are always that entity (a deny-list recognizer);
- `pii.ner_model`: a spaCy pipeline folder the user has (e.g. `en_core_web_lg` unpacked): then
  Presidio's spaCy NLP engine loads it from that path, and its NER finds PERSON, LOCATION, NRP, ...

Presidio is an optional extra (`pip install 'londinium[guardrails]'`): it is imported only when the
`pii` step is in the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from londinium.errors import ConfigError

# Presidio's pattern recognizers this step offers by entity name (its recognizer class each).
PATTERN_RECOGNIZERS = {
    "EMAIL_ADDRESS": "EmailRecognizer", "PHONE_NUMBER": "PhoneRecognizer", "CREDIT_CARD": "CreditCardRecognizer",
    "IBAN_CODE": "IbanRecognizer", "IP_ADDRESS": "IpRecognizer", "URL": "UrlRecognizer", "CRYPTO": "CryptoRecognizer",
    "MAC_ADDRESS": "MacAddressRecognizer", "US_SSN": "UsSsnRecognizer", "UK_NHS": "NhsRecognizer",
}
# What a spaCy NER model adds, through Presidio's SpacyRecognizer.
NER_ENTITIES = ("PERSON", "LOCATION", "NRP", "DATE_TIME")
CUSTOM_SCORE = 0.85  # above any threshold a user would set: the user said these are PII


@dataclass(frozen=True)
class Span:
    entity: str
    start: int
    end: int
    score: float


def _presidio() -> tuple[Any, Any]:
    try:
        import presidio_analyzer
        from presidio_analyzer import predefined_recognizers
    except ImportError:
        raise ConfigError("the gateway's `pii` step needs Microsoft Presidio: pip install 'londinium[guardrails]' "
                          "(or take 'pii' out of gateway.chain)") from None
    return presidio_analyzer, predefined_recognizers


def _offline_emails(predefined: Any) -> type:
    """Presidio's email recognizer, its domain check reading the public-suffix list that ships inside
    tldextract: by default tldextract first downloads the list, which offline costs a failed request
    and a logged traceback at the first email."""
    import tldextract

    class OfflineEmailRecognizer(predefined.EmailRecognizer):
        suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

        def validate_result(self, pattern_text: str) -> bool:
            return self.suffixes(pattern_text).fqdn != ""

    return OfflineEmailRecognizer


class Detector:
    """The entities of `entities` in a text, as Presidio finds them (module docstring)."""

    def __init__(self, entities: list[str], *, language: str = "en", score_threshold: float = 0.4,
                 patterns: dict[str, str] | None = None, deny_lists: dict[str, list[str]] | None = None,
                 ner_model: str = "", where: str = "pii"):
        presidio, predefined = _presidio()
        import regex as regex_module  # Presidio's own regular-expression engine
        patterns, deny_lists = patterns or {}, deny_lists or {}
        recognizers: list[Any] = []
        for entity in sorted({e for e in entities if e in PATTERN_RECOGNIZERS}):
            make = _offline_emails(predefined) if entity == "EMAIL_ADDRESS" else getattr(predefined, PATTERN_RECOGNIZERS[entity])
            recognizers.append(make(supported_language=language))
        for entity, regex in patterns.items():
            try:
                regex_module.compile(regex)  # Presidio compiles with `regex` only on the first request
            except regex_module.error as e:
                raise ConfigError(f"{where}.patterns.{entity}: not a valid regular expression ({e})") from None
            pattern = presidio.Pattern(name=entity.lower(), regex=regex, score=CUSTOM_SCORE)
            recognizers.append(presidio.PatternRecognizer(supported_entity=entity, patterns=[pattern], supported_language=language))
        for entity, words in deny_lists.items():
            if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
                raise ConfigError(f"{where}.deny_lists.{entity} must be a non-empty list of words")
            recognizers.append(presidio.PatternRecognizer(supported_entity=entity, deny_list=words, deny_list_score=CUSTOM_SCORE,
                                                          supported_language=language))
        nlp_engine = self._nlp_engine(presidio, predefined, ner_model, language, recognizers, where)
        known = set(PATTERN_RECOGNIZERS) | set(patterns) | set(deny_lists) | (set(NER_ENTITIES) if ner_model else set())
        for entity in entities:
            if entity not in known:
                hint = (" (a name needs an NER model: set pii.ner_model to a spaCy pipeline folder)" if entity in NER_ENTITIES
                        else f"; built in: {', '.join(PATTERN_RECOGNIZERS)}, or add it under pii.patterns or pii.deny_lists")
                raise ConfigError(f"{where}: no recognizer finds {entity!r}{hint}")
        registry = presidio.RecognizerRegistry(recognizers=recognizers, supported_languages=[language])
        self.entities, self.language, self.threshold = sorted(set(entities)), language, score_threshold
        self.analyzer = presidio.AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[language],
                                                default_score_threshold=score_threshold)
        self.phones = "PHONE_NUMBER" in self.entities
        self.others = [e for e in self.entities if e != "PHONE_NUMBER"]
        self.find("warm-up: someone@example.com, 020 7946 0000")  # Presidio sets some of its state up on the first call

    def _analyze(self, text: str, entities: list[str]) -> list[Any]:
        return self.analyzer.analyze(text=text, language=self.language, entities=entities, score_threshold=self.threshold)

    @staticmethod
    def _nlp_engine(presidio: Any, predefined: Any, ner_model: str, language: str, recognizers: list, where: str) -> Any:
        from presidio_analyzer.nlp_engine import NoOpNlpEngine, SpacyNlpEngine

        if not ner_model:
            engine = NoOpNlpEngine(models=[{"lang_code": language, "model_name": "none"}])
        else:
            if not Path(ner_model).is_dir():
                raise ConfigError(f"{where}.ner_model {ner_model} is not a folder: give the path of a spaCy pipeline "
                                  "(e.g. en_core_web_lg, downloaded and unpacked), or leave it empty for no names")
            engine = SpacyNlpEngine(models=[{"lang_code": language, "model_name": ner_model}])
            recognizers.append(predefined.SpacyRecognizer(supported_language=language, supported_entities=list(NER_ENTITIES)))
        try:
            engine.load()
        except OSError as e:
            raise ConfigError(f"{where}.ner_model {ner_model}: spaCy cannot load it ({e})") from None
        return engine

    def find(self, text: str) -> list[Span]:
        """The entities found, overlaps resolved (the longer span wins, then the higher score), in text order.

        Phone numbers are looked for last, in the text with every other finding blanked out: Presidio's
        phone recognizer runs `phonenumbers`' matcher once per region (eight by default), verifying every
        digit run in each, and that was ~80% of the step's time (docs/LOG.md). It also reads better: in
        one pass a phone followed by a card was read as one candidate and lost (no number), and a card
        after a stray digit became a "phone" longer than the card. A text without a digit holds no
        phone number and is not scanned for one."""
        if not text:
            return []
        found = self._analyze(text, self.others) if self.others else []
        if self.phones and any(c.isdigit() for c in text):
            blanked = list(text)
            for r in found:  # spaces keep every offset where it was
                blanked[r.start:r.end] = " " * (r.end - r.start)
            found += self._analyze("".join(blanked), ["PHONE_NUMBER"])
        spans = sorted((Span(r.entity_type, r.start, r.end, r.score) for r in found),
                       key=lambda s: (-(s.end - s.start), -s.score, s.start))
        kept: list[Span] = []
        for s in spans:
            if all(s.end <= k.start or s.start >= k.end for k in kept):
                kept.append(s)
        return sorted(kept, key=lambda s: s.start)
