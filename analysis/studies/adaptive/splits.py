"""Which text chooses and which text judges in the AdaptiveCompress study, kept apart.

- The SAEs are *chosen* (trained) on the first ``train_tokens`` tokens of the LM ``train`` split;
  the core metrics and KL/CE are *judged* on the ``eval`` split, which shares no article with it
  (the split is fixed by a hash of the title, :func:`analysis.data.lm_split_of`).
- The probing tasks hold Wikipedia leads (``domain``'s ``wikipedia`` class, ``language_id``), and
  a lead can also be a document of the SAE training text. A probing text whose article was among
  the SAE's training documents would score an SAE on text it was fitted to, so :func:`unseen`
  drops it before probing (:func:`sae_training_titles` lists those articles).
- Within a probing problem the top-``k`` latents and the probe are *chosen* on the training rows
  and *judged* on the test rows; the split keeps each group (article, movie, source file, person)
  on one side (:func:`analysis.probing.group_split`).
"""

from __future__ import annotations

from typing import Iterable

from analysis.data import document_token_ids, lm_text
from analysis.data.text import normalise_title

ROLES = {
    "SAE training (chooses the SAEs)": "train",
    "core metrics: L0, MSE, EV, dead and dense latents (judge)": "eval",
    "KL and CE with the SAE spliced in (judge)": "eval",
}
"""The LM split each role of the study reads (:mod:`~analysis.studies.adaptive.run`)."""

CHOOSING = tuple(role for role in ROLES if "chooses" in role)
JUDGING = tuple(role for role in ROLES if "judge" in role)


def split_titles(tokenizer, split: str, n_tokens: int) -> set[str]:
    """Normalised titles of the documents that the first ``n_tokens`` tokens of ``split`` come from
    (as :func:`analysis.data.lm_tokens` concatenates them)."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    docs = lm_text(split)
    titles, count = set(), 0
    for text, title in zip(docs["text"], docs["title"]):
        if count >= n_tokens:
            break
        titles.add(normalise_title(title))
        count += len(document_token_ids(tokenizer, text))
    return titles


def sae_training_titles(tokenizer, train_tokens: int) -> set[str]:
    """The articles (normalised titles) whose text trained the SAEs."""
    return split_titles(tokenizer, ROLES[CHOOSING[0]], train_tokens)


def article(group: str) -> str | None:
    """The normalised article title of a probing text's group (``wiki:<title>``), else None."""
    return normalise_title(group[len("wiki:") :]) if group.startswith("wiki:") else None


def unseen(groups: Iterable[str], titles: set[str]) -> list[bool]:
    """Per probing text: True unless its group is a Wikipedia article in ``titles``."""
    return [article(g) not in titles for g in groups]
