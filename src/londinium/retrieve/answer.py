"""`ask`: retrieve, refuse what the corpus does not support, answer with citations that are checked.

    answer = ask(retriever, "Who said the quality of mercy is not strained?")              # extractive
    answer = ask(retriever, question, mode="generate", generator=openai_generator(url, model))
    answer.text, answer.refused, answer.citations[0].quote

Refusal: the best passage's support (retriever.py) below `retrieve.min_support` means the corpus
does not say, and the answer says so instead of guessing. Extractive mode quotes the sentence or
line of the best passage that holds most of the question's words (a tiny model cannot spoil it);
generate mode gives a model the numbered passages and asks for an answer that cites them as [n].
Every citation is the document id, its title and source, character offsets and the quoted span, and
is checked against the corpus: `valid` is true only when the id exists and text[start:end] is the quote.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from londinium.retrieve.retriever import Passage, Retriever

REFUSAL = "The corpus does not say: no passage in it supports an answer to this question."
_PIECE = re.compile(r"[^\n.!?;]+[.!?;]*")  # sentences, or lines of verse
_CITED = re.compile(r"\[(\d{1,3})\]")
# Short on purpose: a small model's context must hold it, the passages and the question.
SYSTEM = "Answer only from these passages, citing them as [n]. If they do not say, say the corpus does not say."


@dataclass
class Citation:
    n: int  # the passage's number in the prompt ([n])
    id: str
    title: str
    source: str
    license: str
    start: int  # character offsets of the quote in the document text
    end: int
    quote: str
    valid: bool = False  # the id exists and document text[start:end] == quote (checked)


@dataclass
class Answer:
    question: str
    text: str
    refused: bool
    support: float  # the best passage's support; refused when below min_support
    min_support: float
    mode: str
    citations: list[Citation] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate(retriever: Retriever, citations: list[Citation]) -> list[Citation]:
    """Mark each citation valid when its document exists and holds the quote at its offsets."""
    for c in citations:
        i = retriever.index.by_id.get(c.id)
        c.valid = i is not None and bool(c.quote) and retriever.index.documents[i].text[c.start:c.end] == c.quote
    return citations


def cite(n: int, p: Passage, start: int, end: int, text: str) -> Citation:
    return Citation(n, p.id, p.title, p.source, p.license, start, end, text[start:end])


def best_piece(retriever: Retriever, question: str, p: Passage) -> tuple[int, int]:
    """Document offsets of the sentence or line of `p` holding most of the question's words (all of
    `p` when it has no such piece)."""
    terms = set(retriever.fold(question))
    best, best_score = (p.start, p.end), 0.0
    for m in _PIECE.finditer(p.text):
        piece = m.group().strip()
        if len(piece) < 3:
            continue
        score = retriever.coverage(terms, piece)
        if score > best_score:
            lead = len(m.group()) - len(m.group().lstrip())
            best, best_score = (p.start + m.start() + lead, p.start + m.start() + lead + len(piece)), score
    return best


def grounded_prompt(question: str, passages: list[Passage]) -> list[dict[str, str]]:
    """Chat messages: the instructions with the numbered passages, then the question."""
    numbered = "\n\n".join(f"[{i}] ({p.title or p.id}, {p.source})\n{p.text}" for i, p in enumerate(passages, 1))
    return [{"role": "system", "content": f"{SYSTEM}\n\n{numbered}"}, {"role": "user", "content": question}]


def ask(retriever: Retriever, question: str, k: int | None = None, mode: str | None = None,
        generator: Callable[[list[dict[str, str]]], str] | None = None, retrieval_mode: str | None = None,
        **filters: Any) -> Answer:
    """Answer `question` from the corpus (see the module docstring): `mode` is the answer's
    ('extractive' or 'generate'), `retrieval_mode` and `filters` are retrieve()'s."""
    s = retriever.settings
    mode = mode or s.answer
    if mode not in ("extractive", "generate"):
        from londinium.retrieve.vectors import RetrieveError

        raise RetrieveError(f"answer mode {mode!r}: use 'extractive' or 'generate'")
    passages = retriever.retrieve(question, k=k, mode=retrieval_mode, **filters)
    support = passages[0].support if passages else 0.0
    if not passages or support < s.min_support:
        return Answer(question, REFUSAL, True, support, s.min_support, mode)
    if mode == "extractive" or generator is None:
        if mode == "generate":
            from londinium.retrieve.vectors import RetrieveError

            raise RetrieveError("answer mode 'generate' needs a model: give --base-url and --model, or a trained run")
        p = passages[0]
        doc = retriever.index.documents[retriever.index.by_id[p.id]].text
        start, end = best_piece(retriever, question, p)
        c = cite(1, p, start, end, doc)
        return Answer(question, f"\u201c{c.quote}\u201d [1]", False, support, s.min_support, mode, validate(retriever, [c]))
    supported = [p for p in passages if p.support >= s.min_support] or passages[:1]
    text = generator(grounded_prompt(question, supported)).strip()
    used = sorted({int(n) for n in _CITED.findall(text) if 1 <= int(n) <= len(supported)}) or list(range(1, len(supported) + 1))
    citations = [cite(n, supported[n - 1], supported[n - 1].start, supported[n - 1].end,
                      retriever.index.documents[retriever.index.by_id[supported[n - 1].id]].text) for n in used]
    return Answer(question, text, False, support, s.min_support, mode, validate(retriever, citations))


def openai_generator(base_url: str, model: str, api_key: str = "", max_tokens: int = 256) -> Callable[[list[dict[str, str]]], str]:
    """Generation by any OpenAI-compatible chat endpoint (the official client)."""
    import os

    import openai

    from londinium.retrieve.vectors import RetrieveError

    client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none", max_retries=1, timeout=120)

    def generate(messages: list[dict[str, str]]) -> str:
        try:
            reply = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0)
        except openai.OpenAIError as e:
            raise RetrieveError(f"--base-url {base_url}: {type(e).__name__}: {e}") from None
        return reply.choices[0].message.content or ""

    return generate


def local_generator(ws: Any, cfg: Any, run: str = "", max_tokens: int = 128) -> Callable[[list[dict[str, str]]], str]:
    """Generation by a trained run of this workspace through the engine and its chat template; the
    prompt is cut from the front of the passages when it does not fit the model's context."""
    from londinium.infer.chat_template import render_chat
    from londinium.infer.engine import Engine
    from londinium.infer.sampling import SamplingParams
    from londinium.model.load import load_run
    from londinium.tokenizer.codec import encode

    trained = load_run(ws, run=run or cfg.serve.run or cfg.train.run_name, checkpoint=cfg.serve.checkpoint,
                       device=cfg.serve.device, device_setting="serve.device")
    engine = Engine.from_trained(trained)
    context = trained.config.model.context
    budget = max(1, min(max_tokens, context // 4))

    def generate(messages: list[dict[str, str]]) -> str:
        prompt = render_chat(messages)
        ids = encode(trained.tokenizer, prompt)
        if len(ids) > context - budget:  # keep the question and the template's end: drop from the passages' start
            ids = ids[len(ids) - (context - budget):]
        params = SamplingParams.from_config(cfg.generate, max_tokens=budget, temperature=0.0)
        [completion] = engine.generate([ids], params)
        return completion.choices[0].text

    return generate


def render_answer(answer: Answer) -> str:
    """The answer, then one line per citation: number, document, offsets, and whether it was checked."""
    lines = [answer.text, ""]
    if answer.refused:
        lines.append(f"(refused: the best passage's support {answer.support:.2f} is below retrieve.min_support {answer.min_support:.2f})")
    for c in answer.citations:
        lines.append(f"[{c.n}] {c.id} chars {c.start}-{c.end} | {c.title or '(untitled)'} | source {c.source}"
                     + (f" | {c.license}" if c.license else "") + ("" if c.valid else " | NOT FOUND IN THE CORPUS"))
    return "\n".join(lines) + "\n"
