"""Contrastive anchor pairs: each forget question gets a look-alike neighbour question (METHOD.md Part 1).

Training the pair together teaches the boundary sharply: decline one, answer the other.

Similarity is TF-IDF cosine (word unigrams + bigrams, lowercased; numpy only) between questions:

- ``template``: entity names are masked first (``metadata["entity"]``, e.g. the TOFU author's
  full name and each capitalised part of it, become ``<ent>``), so questions built from the same
  template about different entities match: "What gender is author <ent>?" pairs with
  "What gender is the author <ent>?".
- ``lexical``: raw questions.
- ``auto``: ``template`` when every forget and neighbour record names its entity, else ``lexical``.

Each forget record gets ``anchor_id`` = its most similar neighbour and ``anchor_similarity``.
Ties go to the neighbour used least so far, then to the earlier one, so pairs spread over the
neighbours deterministically. Each neighbour that anchors at least one forget record gets the
back-link: ``metadata["anchor_of"]`` lists those forget ids (most similar first), ``anchor_id``
is the first of them and ``anchor_similarity`` its similarity.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

from harmonia.data.schema import QARecord

AnchorMethod = Literal["auto", "template", "lexical"]
MASK = "<ent>"
_WORD = re.compile(r"<ent>|[a-z0-9]+(?:'[a-z]+)?")
_TIE = 1e-9


def mask_entity(text: str, names: Iterable[str]) -> str:
    """Replace each name, then each capitalised part of it, by ``<ent>`` (whole words, case-sensitive)."""
    parts: set[str] = set()
    for name in names:
        if name.strip():
            parts.add(name.strip())
            parts.update(p for p in re.split(r"[\s()]+", name) if len(p) > 1 and p[:1].isupper())
    for part in sorted(parts, key=len, reverse=True):  # the full name before its pieces
        text = re.sub(rf"(?<!\w){re.escape(part)}(?!\w)", MASK, text)
    return re.sub(rf"{MASK}(?:[\s-]+{MASK})+", MASK, text)  # "<ent> <ent>" from a split name


def _terms(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


def tfidf_vectors(texts: Sequence[str]) -> np.ndarray:
    """L2-normalised TF-IDF rows (smoothed idf = ln((1+N)/(1+df)) + 1, raw term counts)."""
    docs = [Counter(_terms(t)) for t in texts]
    vocab = {term: i for i, term in enumerate(sorted({t for d in docs for t in d}))}
    matrix = np.zeros((len(texts), len(vocab)))
    for row, doc in enumerate(docs):
        for term, count in doc.items():
            matrix[row, vocab[term]] = count
    df = (matrix > 0).sum(axis=0)
    matrix *= np.log((1 + len(texts)) / (1 + df)) + 1
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


def similarity_matrix(queries: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
    """Cosine similarities (queries x candidates) with one idf fitted on both sets."""
    vectors = tfidf_vectors([*queries, *candidates])
    return vectors[: len(queries)] @ vectors[len(queries) :].T


def _entity(record: QARecord) -> str:
    value = record.metadata.get("entity", "")
    return value if isinstance(value, str) else ""


def resolve_method(forget: Sequence[QARecord], neighbors: Sequence[QARecord], method: AnchorMethod) -> str:
    if method != "auto":
        return method
    return "template" if all(_entity(r) for r in (*forget, *neighbors)) else "lexical"


def pair_anchors(records: Sequence[QARecord], *, method: AnchorMethod = "auto") -> list[QARecord]:
    """Return copies of ``records`` with anchor links between role forget and role neighbor (see module doc).

    Records of other roles are returned unchanged; with no forget or no neighbour records nothing
    is linked.
    """
    forget = [i for i, r in enumerate(records) if r.role == "forget"]
    neighbors = [i for i, r in enumerate(records) if r.role == "neighbor"]
    out = [r.model_copy(deep=True) for r in records]
    if not forget or not neighbors:
        return out
    chosen = resolve_method([records[i] for i in forget], [records[j] for j in neighbors], method)
    if chosen == "template":
        names = [_entity(records[i]) for i in (*forget, *neighbors)]
        texts = [mask_entity(records[i].question, names) for i in (*forget, *neighbors)]
    else:
        texts = [records[i].question for i in (*forget, *neighbors)]
    sims = similarity_matrix(texts[: len(forget)], texts[len(forget) :])
    uses = np.zeros(len(neighbors), dtype=int)
    back: dict[int, list[tuple[float, int]]] = {}
    for fi, row in enumerate(sims):
        best = row.max()
        tied = np.flatnonzero(row >= best - _TIE)
        nj = int(min(tied, key=lambda j: (uses[j], j)))
        uses[nj] += 1
        similarity = round(float(row[nj]), 6)
        rec = out[forget[fi]]
        rec.anchor_id = records[neighbors[nj]].id
        rec.anchor_similarity = similarity
        rec.metadata["anchor_method"] = chosen
        back.setdefault(nj, []).append((similarity, fi))
    for nj, links in back.items():
        links.sort(key=lambda s_f: (-s_f[0], s_f[1]))
        rec = out[neighbors[nj]]
        rec.anchor_id = records[forget[links[0][1]]].id
        rec.anchor_similarity = links[0][0]
        rec.metadata["anchor_of"] = [records[forget[f]].id for _, f in links]
        rec.metadata["anchor_method"] = chosen
    return out


def drop_anchor_links(records: Sequence[QARecord]) -> list[QARecord]:
    """Copies of ``records`` with every anchor link (and back-link) removed."""
    return [r.model_copy(update={"anchor_id": None, "anchor_similarity": None,
                                 "metadata": {k: v for k, v in r.metadata.items()
                                              if k not in ("anchor_of", "anchor_method")}})
            for r in records]
