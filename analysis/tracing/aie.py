"""The average indirect effect: many facts' traces averaged by token role and layer.

One trace is noisy and prompt-specific. ROME (Meng et al. 2022, Fig. 2) therefore traces
about a thousand known facts and averages each state's indirect effect ``p_restored -
p_corrupt`` within *token roles* (first, middle and last subject token, first subsequent
token, further tokens, last token), so that prompts of different lengths line up: the
*average indirect effect* (AIE), with a confidence interval over facts. Only facts the model
gets right enter: a fact whose clean top prediction is not the answer's first token is
skipped with its reason (:class:`Skipped`). Each fact's trace is cached on disk, keyed by the
settings, the fact and the model (:func:`analysis.models.model_key`), so a rerun resumes.

:meth:`AIEResult.component_effects` reduces the traces of attention and MLP outputs to one
number per fact, layer and component: the seed's redundancy signal (Scarlatescu & Mehta,
"Information-Aware Compression Schemes Using Causal Tracing"), which
:meth:`analysis.scores.ComponentScores.from_aie` turns into a score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

import torch
from jaxtyping import Float, Int
from scipy.stats import t as student_t
from torch import Tensor
from transformer_lens import HookedTransformer

from analysis.cache import cached_map
from analysis.components import KINDS
from analysis.hooks import hook_kind
from analysis.models import model_key
from analysis.progress import progress
from analysis.tracing.corrupt import Corruption, noise_scale
from analysis.tracing.inputs import ROLES, fact_fields, first_token, prepare
from analysis.tracing.trace import Method, TraceResult, trace

CACHE_VERSION = 3
"""Part of every cached trace's key; bumped when the engine's output for the same inputs changes."""


@dataclass
class Skipped:
    """A fact left out of an aggregate, and why."""

    prompt: str
    subject: str
    target: str | None
    reason: str


def trace_fact(model: HookedTransformer, item: dict, kw: dict, require_correct: bool = True) -> TraceResult | Skipped:
    """Trace one fact at every position from the subject on; wrong clean predictions are skipped
    (unless ``require_correct`` is False: toy runs on random weights, which predict no fact)."""
    try:
        target = item["target"]
        if isinstance(target, str) and model.tokenizer is not None:
            target = first_token(model, target)
        fact = prepare(model, item["prompt"], item["subject"], target)
        positions = range(fact.subject_span[0], fact.tokens.numel())
        result = trace(
            model,
            item["prompt"],
            item["subject"],
            fact.target_id,
            positions=positions,
            replacement=item.get("replacement"),
            **kw,
        )
    except ValueError as err:
        return Skipped(item["prompt"], item["subject"], item.get("target"), str(err))
    if require_correct and not result.correct:
        return Skipped(
            item["prompt"],
            item["subject"],
            item.get("target"),
            f"clean prediction {result.clean_top!r} is not the target {result.target!r}",
        )
    return result


@dataclass
class AIEResult:
    """Indirect effects of many facts by token role and layer, with confidence intervals."""

    kinds: tuple[str, ...]
    traces: list[TraceResult]
    skipped: list[Skipped]
    config: dict

    @property
    def n_facts(self) -> int:
        """Facts traced (skipped ones excluded)."""
        return len(self.traces)

    def effects(self, kind: str) -> Float[Tensor, "fact role layer"]:
        """Per-fact indirect effect by role (NaN where a prompt lacks the role)."""
        if not self.traces:
            raise ValueError(
                f"No fact was traced ({len(self.skipped)} skipped); nothing to average. "
                "See result.skipped for the reasons, and trace more facts."
            )
        return torch.stack([t.role_effects(kind) for t in self.traces])

    def counts(self, kind: str) -> Int[Tensor, " role"]:
        """Facts contributing to each role."""
        return (~self.effects(kind)[:, :, 0].isnan()).sum(0)

    def mean(self, kind: str) -> Float[Tensor, "role layer"]:
        """Average indirect effect (over facts having the role)."""
        return self.effects(kind).nanmean(0)

    def ci(self, kind: str, level: float = 0.95) -> Float[Tensor, "role layer"]:
        """Half-width of the ``level`` confidence interval of :meth:`mean` (Student t)."""

        e = self.effects(kind)
        n = (~e.isnan()).sum(0).float()
        var = ((e - e.nanmean(0)) ** 2).nansum(0) / (n - 1).clamp(min=1)
        q = torch.tensor(student_t.ppf(0.5 + level / 2, (n - 1).clamp(min=1).numpy()), dtype=torch.float32)
        half = q * (var / n.clamp(min=1)).sqrt()
        return torch.where(n > 1, half, torch.full_like(half, float("nan")))

    def peak(self, kind: str, roles: Sequence[str] = ROLES, layers: Sequence[int] | None = None) -> dict:
        """Where the AIE is largest: role, layer, relative depth, value and its interval.

        ``roles`` and ``layers`` restrict the search. Roles that tie at the peak (the same
        position in every prompt, e.g. the first subsequent token that is also the last token)
        are all named, joined by " = ".
        """
        m, h = self.mean(kind), self.ci(kind)
        sel = [ROLES.index(r) for r in roles]
        sub = m[sel].nan_to_num(float("-inf"))
        if layers is not None:
            excluded = torch.ones(m.shape[1], dtype=torch.bool)
            excluded[list(layers)] = False
            sub[:, excluded] = float("-inf")
        flat = int(sub.argmax())
        r, l = sel[flat // m.shape[1]], flat % m.shape[1]
        tied = [ROLES[i] for i in sel if torch.allclose(m[i], m[r], equal_nan=True)]
        return {
            "kind": hook_kind(kind),
            "role": " = ".join(tied),
            "layer": l,
            "depth": l / max(1, m.shape[1] - 1),
            "aie": float(m[r, l]),
            "ci": float(h[r, l]),
        }

    def bootstrap_means(self, kind: str, n_boot: int = 1000, seed: int = 0) -> Float[Tensor, "boot role layer"]:
        """:meth:`mean` over ``n_boot`` resamples of the facts (with replacement).

        The resamples depend only on ``seed`` and the number of facts, so two kinds bootstrapped
        with the same seed are paired (resample ``b`` draws the same facts for both).
        """
        e = self.effects(kind)
        n = e.shape[0]
        if n_boot < 1:
            raise ValueError(f"n_boot must be >= 1 (got {n_boot}).")
        idx = torch.randint(0, n, (n_boot, n), generator=torch.Generator().manual_seed(seed))
        chunk = max(1, 2_000_000 // max(1, e[0].numel() * n))
        return torch.cat([e[idx[i : i + chunk]].nanmean(1) for i in range(0, n_boot, chunk)])

    def with_samples(self, samples: Sequence[int]) -> "AIEResult":
        """The same facts averaged over a subset of their noise samples (see
        :meth:`TraceResult.with_samples`): what tracing with fewer samples would give."""
        traces = [t.with_samples(samples) for t in self.traces]
        return AIEResult(self.kinds, traces, self.skipped, self.config | {"n_samples": len(list(samples))})

    def with_window(self, window: int) -> "AIEResult":
        """The same attribution result summed over ROME's windows (see :meth:`TraceResult.with_window`)."""
        return AIEResult(
            self.kinds, [t.with_window(window) for t in self.traces], self.skipped, self.config | {"window": window}
        )

    def restrict(self, prompts: Iterable[str]) -> "AIEResult":
        """The same result over the traced facts whose prompt is in ``prompts``."""
        keep = set(prompts)
        return AIEResult(
            self.kinds,
            [t for t in self.traces if t.prompt in keep],
            [s for s in self.skipped if s.prompt in keep],
            self.config,
        )

    def summary(self) -> dict:
        """Counts and mean clean / corrupted probabilities."""
        return {
            "facts traced": self.n_facts,
            "facts skipped": len(self.skipped),
            "mean p_clean": float(torch.tensor([t.clean_prob for t in self.traces]).mean()),
            "mean p_corrupt": float(torch.tensor([t.corrupted_prob for t in self.traces]).mean()),
        }

    def component_effects(self, reduce: Literal["max", "sum"] = "max") -> Float[Tensor, "fact layer kind"]:
        """Per fact, each layer's attention and MLP output effect (kinds in
        :data:`analysis.components.KINDS` order), reduced over the positions from the subject
        on: ``max`` is the strongest single restoration, ``sum`` the total."""
        if not self.traces:
            raise ValueError("No fact could be traced (all were skipped); see the facts' reasons.")
        hooks = tuple(hook_kind(k) for k in KINDS)
        missing = [h for h in hooks if h not in self.kinds]
        if missing:
            raise ValueError(f"The traces lack {missing}; trace the kinds 'attn' and 'mlp'.")
        if reduce not in ("max", "sum"):
            raise ValueError(f"Unknown reduce {reduce!r}; use 'max' or 'sum'.")
        per = []
        for t in self.traces:
            s = t.subject_span[0]
            ie = torch.stack([t.indirect_effect(h)[:, s:] for h in hooks], dim=-1)  # [layer, pos, kind]
            per.append(ie.amax(1) if reduce == "max" else ie.sum(1))
        return torch.stack(per)


def average_indirect_effect(
    model: HookedTransformer,
    facts: Iterable[Any],
    kinds: Sequence[str] = ("resid", "mlp", "attn"),
    *,
    corruption: Corruption = "noise",
    n_samples: int = 10,
    noise: float | None = None,
    seed: int = 0,
    window: int = 10,
    replacements: Sequence[str | None] | None = None,
    method: Method = "exact",
    max_rows: int = 1024,
    cache: bool = True,
    desc: str | None = None,
    require_correct: bool = True,
) -> AIEResult:
    """Trace many facts and average the indirect effect by token role and layer (ROME Fig. 2).

    Each fact (a row with ``prompt``, ``subject``, ``target``) is traced at every position from
    its first subject token on (earlier positions have no effect by causality), tracing the
    *first token* of the target, as ROME traces the model's predicted token. Facts whose clean
    prediction is not that token, and facts that fail validation, are listed in
    ``result.skipped`` with the reason and never enter the averages (``require_correct=False``
    keeps the wrong ones: only for toy runs on random weights). Each fact's trace is
    cached on disk (keyed by the settings, the fact and the model), so a rerun resumes.
    ``replacements`` (token corruption) gives each fact's replacement subject. ``noise``
    defaults to ROME's: 3 x the std of the facts' subject-token embeddings
    (:func:`~analysis.tracing.noise_scale` with ``facts``).
    """
    items = [fact_fields(f) for f in facts]
    if corruption == "tokens":
        if replacements is None or len(replacements) != len(items):
            raise ValueError("Token corruption needs one replacement subject per fact; see pair_subjects().")
        for it, rep in zip(items, replacements):
            it["replacement"] = rep
    if corruption == "noise" and noise is None:
        noise = noise_scale(model, facts=items)
    kinds = tuple(dict.fromkeys(hook_kind(k) for k in kinds))
    kw = dict(
        kinds=kinds,
        corruption=corruption,
        n_samples=n_samples if corruption == "noise" else 1,
        noise=noise,
        seed=seed,
        window=window,
        method=method,
        max_rows=max_rows,
    )
    config = {k: v for k, v in kw.items() if k != "max_rows"} | {"version": CACHE_VERSION}
    if not require_correct:  # the default keeps the cache keys it always had
        config["require_correct"] = False
    compute = lambda item: trace_fact(model, item, kw, require_correct)  # noqa: E731
    desc = desc or f"trace {method} ({corruption})"
    if cache:
        out = cached_map("tracing/fact", items, compute, config=config, model=model_key(model), desc=desc)
    else:
        out = [compute(item) for item in progress(items, desc=desc)]
    traces = [o for o in out if isinstance(o, TraceResult)]
    skipped = [o for o in out if isinstance(o, Skipped)]
    return AIEResult(kinds, traces, skipped, config)
