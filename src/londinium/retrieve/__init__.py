"""Grounded answers from the corpus: embeddings, a vector index, hybrid retrieval, `ask` with citations.

    passages.py    documents cut into passages with character offsets
    static.py      a static embedding learned from the corpus (PPMI + SVD word vectors, SIF)
    embedders.py   every embedding model behind `embed(texts)`: corpus, model, sentence-transformers, wordllama, openai
    vectors.py     the vector index stage (`londinium index vectors`): build, load with checks, exact search
    fusion.py      reciprocal-rank fusion and weighted score fusion
    retriever.py   `Retriever.retrieve()`: BM25, vectors or both, filters, the cited span and its support
    answer.py      `ask()`: refusal, extractive or generated answers, citations checked against the corpus
    evaluate.py    the retrieval eval: queries cut from the held-out splits, metrics, refusal calibration
"""
