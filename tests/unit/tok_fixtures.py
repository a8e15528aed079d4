"""A small period-English corpus in the corpus stage's JSONL contract, for tokenizer and shard tests.

Real public-domain lines (King James Bible, Shakespeare in modern and First Folio spelling, Milton)
so BPE learns real merges; a few documents carry awkward text on purpose (runs of spaces, tabs,
CRLF, NFD accents, long s, emoji, a literal "<|endoftext|>").
"""

from __future__ import annotations

import random
import unicodedata

from londinium.files import write_jsonl
from londinium.workspace import Workspace

KJV = """In the beginning God created the heaven and the earth. And the earth was without form, and void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. And God said, Let there be light: and there was light. And God saw the light, that it was good: and God divided the light from the darkness. And God called the light Day, and the darkness he called Night. And the evening and the morning were the first day.
The LORD is my shepherd; I shall not want. He maketh me to lie down in green pastures: he leadeth me beside the still waters. He restoreth my soul: he leadeth me in the paths of righteousness for his name's sake. Yea, though I walk through the valley of the shadow of death, I will fear no evil: for thou art with me; thy rod and thy staff they comfort me.
And he said unto them, Go ye into all the world, and preach the gospel to every creature. Verily, verily, I say unto thee, Except a man be born again, he cannot see the kingdom of God. For God so loved the world, that he gave his only begotten Son, that whosoever believeth in him should not perish, but have everlasting life."""

SHAKESPEARE = """Shall I compare thee to a summer's day? Thou art more lovely and more temperate: Rough winds do shake the darling buds of May, And summer's lease hath all too short a date. But thy eternal summer shall not fade, Nor lose possession of that fair thou owest; Nor shall Death brag thou wanderest in his shade, When in eternal lines to time thou growest.
To be, or not to be: that is the question: Whether 'tis nobler in the mind to suffer The slings and arrows of outrageous fortune, Or to take arms against a sea of troubles, And by opposing end them? To die: to sleep; No more; and by a sleep to say we end The heart-ache and the thousand natural shocks That flesh is heir to.
Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him. The evil that men do lives after them; The good is oft interred with their bones; So let it be with Caesar. The noble Brutus Hath told you Caesar was ambitious: If it were so, it was a grievous fault, And grievously hath Caesar answer'd it."""

FOLIO = """To be, or not to be, that is the Queſtion: Whether 'tis Nobler in the minde to ſuffer The Slings and Arrowes of outragious Fortune, Or to take Armes againſt a Sea of troubles, And by oppoſing end them: to dye, to ſleepe No more; and by a ſleepe, to ſay we end The Heart-ake, and the thouſand Naturall ſhockes That Fleſh is heyre too?
Now is the Winter of our Diſcontent, Made glorious Summer by this Sonne of Yorke: And all the clouds that lowr'd vpon our houſe In the deepe boſome of the Ocean buried. Quoth he, thou haſt done well, and doth he not ſay ſo? Why hath he not come vpon the morrow? I haue ſeene him, and he hath ſeene me."""

MILTON = """Of Mans First Disobedience, and the Fruit Of that Forbidden Tree, whose mortal tast Brought Death into the World, and all our woe, With loss of Eden, till one greater Man Restore us, and regain the blissful Seat, Sing Heav'nly Muse, that on the secret top Of Oreb, or of Sinai, didst inspire That Shepherd, who first taught the chosen Seed.
The mind is its own place, and in it self Can make a Heav'n of Hell, a Hell of Heav'n. What matter where, if I be still the same, And what I should be, all but less then hee Whom Thunder hath made greater? Here at least We shall be free; th' Almighty hath not built Here for his envy, will not drive us hence."""

SOURCES = {"kjv": KJV, "shakespeare": SHAKESPEARE, "folio": FOLIO, "milton": MILTON}

AWKWARD = [
    "  two spaces lead, three   inside,\tand a tab\r\nthen CRLF\n\n\nand blank lines   ",
    unicodedata.normalize("NFD", "Café naïve résumé — ſo ſayeth the Prieſt") + " and NFC: " + unicodedata.normalize("NFC", "Café"),
    "A user wrote <|endoftext|> and <|user|> in a letter; they are words here, not control tokens.",
    "Emoji with joiners: 👩‍👩‍👧‍👦 🏳️‍🌈 and a tag character \U000E0001 and an unassigned one \U000E0000 \U0010FFFF.",
]


def _documents(source: str, text: str, n: int, rng: random.Random) -> list[dict]:
    lines = text.splitlines()
    docs = []
    for i in range(n):
        body = "\n\n".join(rng.sample(lines, k=min(len(lines), 2)))
        docs.append({"id": f"{source}/text.txt#{i}", "text": body, "source": source, "period": [1600, 1667], "group": f"{source}-{i}", "title": source})
    return docs


def write_corpus(ws: Workspace, train_per_source: int = 12, seed: int = 0) -> dict[str, list[dict]]:
    """Write corpus/{train,val,test}.jsonl into `ws`; returns the rows per split."""
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for source, text in SOURCES.items():
        splits["train"] += _documents(source, text, train_per_source, rng)
        splits["val"] += _documents(source, text, 2, rng)
        splits["test"] += _documents(source, text, 1, rng)
    for i, text in enumerate(AWKWARD):
        splits["train" if i % 2 else "val"].append({"id": f"awkward/x.txt#{i}", "text": text, "source": "awkward", "period": [0, 0], "group": f"awk-{i}", "title": "awkward"})
    for split, rows in splits.items():
        write_jsonl(ws.corpus_split(split), rows)
    adopt_corpus(ws)
    return splits


def adopt_corpus(ws: Workspace) -> None:
    """Record hand-written corpus splits as the corpus stage's outputs (later stages trust only those),
    with the profile of the period texts they are."""
    ws.adopt("corpus", [ws.corpus_split(s) for s in ("train", "val", "test")], {"profile": "period-london"})


def corpus_texts() -> list[str]:
    return [line for text in SOURCES.values() for line in text.splitlines()] + AWKWARD
