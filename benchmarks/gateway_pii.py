"""How well the gateway's PII guardrail finds structured personal data, and what it adds to a request.

    python benchmarks/gateway_pii.py [--spans 2000] [--seed 0] [--json out.json]
    python benchmarks/gateway_pii.py --quick      # the short run tests/integration/test_benchmarks.py does

A seeded generator writes texts in the corpus's manner (period sentences, with verse references,
years and act/scene numbers as distractors) with labelled spans of the structured entities the `pii`
step masks by default: emails, phone numbers (UK and US formats; UK mobiles drawn from allocated ranges), credit cards (valid Luhn, spaced,
dashed or compact), IBANs (valid check digits, grouped or compact) and IPv4/IPv6 addresses. It reads:

- recall and precision per entity and overall, a finding counted as right when its type and its
  boundaries equal a labelled span's (a finding that overlaps a label with other boundaries counts as
  both a miss and a false alarm);
- the added latency per request: the `pii` step's own time (detection, masking, unmasking the answer)
  in a chain of the real step and an upstream that answers at once with the masked text, p50 and p95,
  on chat requests of the same texts.

Names (PERSON) need an NER model (pii.ner_model) and are not generated here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("thou art the lord of this fair city and thy servants wait upon thee at the gate where "
         "the watchmen cry the hour and merchants bring their wares from far countries by the river").split()
DISTRACTORS = ["in the year 1611", "chapter 3, verse 16", "Act 2, Scene 1", "the 12th of May 1604", "psalm 23:4",
               "a score and 10 men", "folio 47", "page 1,032"]
TEMPLATES = {
    "EMAIL_ADDRESS": ["write unto {} when thou canst", "his letter came from {} this morning", "send word to {}."],
    "PHONE_NUMBER": ["call me on {} at noon", "the number is {}, ring it", "telephone {} for the steward"],
    "CREDIT_CARD": ["pay with card {} today", "the card {} was refused", "charge it to {} please"],
    "IBAN_CODE": ["transfer the sum to {} by Friday", "his account is {}", "pay into {} and no other"],
    "IP_ADDRESS": ["the server at {} is down", "connect to {} again", "requests came from {} all night"],
}


def luhn_complete(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return digits + str((10 - total % 10) % 10)


def iban(rng: random.Random, country: str) -> str:
    bban = ("".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) + "".join(str(rng.randrange(10)) for _ in range(14))
            if country == "GB" else "".join(str(rng.randrange(10)) for _ in range(18)))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    code = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    return " ".join(code[i:i + 4] for i in range(0, len(code), 4)) if rng.random() < 0.5 else code


def entity(rng: random.Random, kind: str) -> str:
    import phonenumbers  # Presidio's own dependency for phone numbers: which ranges are allocated
    if kind == "EMAIL_ADDRESS":
        name = rng.choice(["john", "mary", "will", "anne", "thomas", "joan"]) + rng.choice([".", "_", ""]) + rng.choice(["smith", "hart", "fletcher", "bacon"])
        return f"{name}{rng.randrange(100) if rng.random() < 0.3 else ''}@{rng.choice(['example.com', 'globe.co.uk', 'mail.org', 'city.gov'])}"
    if kind == "PHONE_NUMBER":
        n = lambda k: "".join(str(rng.randrange(10)) for _ in range(k))  # noqa: E731
        number = rng.choice([f"+44 20 7946 {n(4)}", f"020 7946 {n(4)}", f"(212) 555-{n(4)}", f"+1 415 555 {n(4)}", "mobile"])
        while number == "mobile" or not phonenumbers.is_valid_number(phonenumbers.parse(number, "GB")):
            # A UK mobile in an allocated range: numbers in unallocated ranges (Ofcom's drama range
            # 07700 900xxx among them) are not phone numbers to `phonenumbers`, so not PII to Presidio.
            number = f"+44 7{n(3)} {n(6)}"
        return number
    if kind == "CREDIT_CARD":
        prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16)])
        number = luhn_complete(prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1)))
        sep = rng.choice([" ", "-", ""])
        groups = [number[:4], number[4:10], number[10:]] if length == 15 else [number[i:i + 4] for i in range(0, 16, 4)]
        return sep.join(groups)
    if kind == "IBAN_CODE":
        return iban(rng, rng.choice(["GB", "DE"]))
    if rng.random() < 0.8:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    return "2001:db8:" + ":".join(f"{rng.randrange(65536):x}" for _ in range(6))


def sample(rng: random.Random) -> tuple[str, list[tuple[str, int, int]]]:
    """A text of one to three sentences, each holding one labelled entity, with distractors around."""
    text, labels = "", []
    for _ in range(rng.randint(1, 3)):
        lead = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize()
        kind = rng.choice(sorted(TEMPLATES))
        before, after = rng.choice(TEMPLATES[kind]).split("{}")
        value = entity(rng, kind)
        text += f"{lead}, {rng.choice(DISTRACTORS)}; {before}"
        labels.append((kind, len(text), len(text) + len(value)))
        text += value + after + " "
    return text, labels


def detector_for(tmp: Path):
    from londinium.gateway.runtime import Gateway
    from londinium.gateway.settings import parse_settings

    data = {"gateway": {"database": str(tmp / "gw.db"), "chain": ["route", "pii", "upstream"]},
            "backends": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "model": "a"}], "routes": [{"alias": "m", "backends": ["a"]}]}
    return Gateway(parse_settings(data, "gw.toml"))


def measure_accuracy(detector, samples) -> dict:
    tally = {k: {"tp": 0, "fn": 0, "fp": 0} for k in TEMPLATES}
    for text, labels in samples:
        gold = set(labels)
        found = {(s.entity, s.start, s.end) for s in detector.find(text)}
        for g in gold:
            tally[g[0]]["tp" if g in found else "fn"] += 1
        for f in found - gold:
            tally.setdefault(f[0], {"tp": 0, "fn": 0, "fp": 0})["fp"] += 1
    rows = {}
    for kind, t in {**tally, "ALL": {k: sum(v[k] for v in tally.values()) for k in ("tp", "fn", "fp")}}.items():
        rows[kind] = {**t, "recall": t["tp"] / max(1, t["tp"] + t["fn"]), "precision": t["tp"] / max(1, t["tp"] + t["fp"])}
    return rows


def measure_latency(gateway, samples) -> dict:
    """The `pii` step's own time per chat request (its entry in the exchange's trace, the answer unmasked)."""
    from londinium.gateway.chain import Chain, Exchange, Reply

    class Echo:
        name = "upstream"

        async def __call__(self, ex, call_next):
            return Reply(200, body={"choices": [{"index": 0, "message": {"role": "assistant", "content": ex.body["messages"][-1]["content"]}}]})

    route, step, _ = gateway.chain.steps
    chain = Chain([route, step, Echo()])

    async def run() -> list[float]:
        times = []
        for text, _ in samples:
            ex = Exchange("chat", {"model": "m", "messages": [{"role": "system", "content": "Answer briefly."},
                                                            {"role": "user", "content": text}]})
            reply = await chain(ex)
            assert reply.body["choices"][0]["message"]["content"] == text, "the round trip changed the text"
            times.append(dict(ex.trace)["pii"] - dict(ex.trace)["upstream"])
        return times

    times = sorted(asyncio.run(run()))
    return {"requests": len(times), "p50_ms": 1000 * statistics.median(times), "p95_ms": 1000 * times[int(0.95 * (len(times) - 1))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=2000, help="labelled spans to generate (at least 1,000 for the issue's figures)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--quick", action="store_true", help="150 spans, for the tests")
    args = ap.parse_args()
    spans = 150 if args.quick else args.spans
    rng = random.Random(args.seed)
    samples: list = []
    while sum(len(labels) for _, labels in samples) < spans:
        samples.append(sample(rng))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        gateway = detector_for(Path(tmp))
        setup = time.perf_counter() - start
        step = gateway.chain.steps[1]
        accuracy = measure_accuracy(step.detector, samples)
        latency = measure_latency(gateway, samples)
        gateway.store.close()
    print(f"{sum(len(lb) for _, lb in samples)} labelled spans in {len(samples)} texts (seed {args.seed}); analyzer set up in {setup:.2f} s")
    print(f"{'entity':<15}{'spans':>7}{'recall':>9}{'precision':>11}{'missed':>8}{'false':>7}")
    for kind, r in accuracy.items():
        print(f"{kind:<15}{r['tp'] + r['fn']:>7}{r['recall']:>9.4f}{r['precision']:>11.4f}{r['fn']:>8}{r['fp']:>7}")
    print(f"added latency per request (pii step, mask + unmask): p50 {latency['p50_ms']:.2f} ms, p95 {latency['p95_ms']:.2f} ms "
          f"over {latency['requests']} requests")
    if args.json:
        Path(args.json).write_text(json.dumps({"accuracy": accuracy, "latency": latency, "seed": args.seed}, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
