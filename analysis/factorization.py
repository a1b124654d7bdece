"""The factorization study (seed 002): low-rank MLPs judged by perplexity, accuracy and probes.

Seed 002 (Pletenev 2024, "Probing the Pitfalls: Understanding SVD's Shortcomings in Language
Model Compression") factorizes the MLP matrices of Llama-2-7B (gate, up, down) and of
BERT-base (intermediate, output) at a uniform compression ratio with plain SVD, Fisher-weighted
SVD (FWSVD) and activation-aware SVD (ASVD), and judges the result three ways: a downstream
benchmark (MMLU for Llama, CoLA after fine-tuning for BERT), and 2-layer MLP probes with
control tasks on every layer's hidden states for an acceptability (CoLA), a sentiment (SST-2)
and a truthfulness (TruthfulQA) task. Its claims: plain SVD collapses already at 5-10 %
compression, weighted methods (ASVD best) hold up much better, and probes show *which*
knowledge goes first (TruthfulQA before SST-2).

This module runs the same grid on the book's models with the operations of
:mod:`analysis.compress` (which adds SVD-LLM's whitening, Wang et al. 2024) and the probes of
:mod:`analysis.probing`. Sizes come from :data:`FACTOR_CONFIGS` per run profile; each grid
cell is cached on disk, keyed by its configuration, so an interrupted sweep resumes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import pandas as pd
import torch
from torch import Tensor

from analysis import compress, probing
from analysis.cache import cached
from analysis.progress import progress

CACHE_VERSION = 3
"""Part of every cached cell's key; bumped when a cell's output for the same inputs changes."""

METHOD_LABELS = {"svd": "SVD", "fwsvd": "FWSVD", "asvd": "ASVD", "svdllm": "SVD-LLM"}


@dataclass(frozen=True)
class FactorConfig:
    """Sizes of the factorization study for one run profile (see :func:`factor_config_for`)."""

    ratios: tuple[float, ...] = (0.05, 0.10, 0.15, 0.25, 0.35)
    """Fractions of each MLP matrix's parameters removed (the seed's decoder grid)."""
    methods: tuple[str, ...] = compress.FACTOR_METHODS
    decoder_layers: tuple[int, ...] | None = None
    """Decoder layers whose MLPs are factorized (None: all, as in the seed)."""
    eval_tokens: int = 4096
    """Held-out tokens scored for perplexity per grid cell."""
    calib_tokens: int = 4096
    """Calibration tokens for activation statistics (ASVD, SVD-LLM)."""
    context: int = 256
    grad_examples: int = 16
    """Calibration windows of ``context`` tokens, one backward pass each, for FWSVD's Fisher."""
    n_facts: int = 800
    """Facts screened; those the uncompressed model knows are re-tested in every cell."""
    n_mc: int = 60
    """TruthfulQA multiple-choice questions."""
    n_fact_mc: int = 60
    """Wikidata facts asked as 4-way multiple choice (the MMLU stand-in: knowledge, 4 choices)."""
    mc_choices: int = 4
    """Choices per question: the true answer and the first ``mc_choices - 1`` false ones (MMLU has 4)."""
    n_probe: int = 300
    """Examples per probing task."""
    probe: probing.ProbeConfig = probing.ProbeConfig()
    encoder_calib_tokens: int = 4096
    encoder_grad_examples: int = 64
    """Acceptability-task sentences whose task-head gradients give the encoder's Fisher."""
    batch_size: int = 8
    decoder_probe_ratios: tuple[float, ...] = (0.10,)
    """Ratios at which the decoder is probed too (every method), to set probes beside perplexity."""
    decoder_probe_methods: tuple[str, ...] = compress.FACTOR_METHODS
    n_decoder_probe: int = 150
    """Examples per probing task on the decoder (a forward pass of the decoder per example)."""
    decoders: tuple[str, ...] = ()
    """Decoders to try first (the seed's); the profile's model is the fallback."""
    encoders: tuple[str, ...] = ()


FACTOR_CONFIGS: dict[str, FactorConfig] = {
    "smoke": FactorConfig(ratios=(0.35,), decoder_layers=(0,), eval_tokens=128, calib_tokens=128, context=64,
                          grad_examples=1, n_facts=24, n_mc=2, n_fact_mc=4, n_probe=24,
                          probe=probing.ProbeConfig(seeds=(0,), steps=20), encoder_calib_tokens=128,
                          encoder_grad_examples=4, batch_size=8, decoder_probe_ratios=(0.35,),
                          decoder_probe_methods=("svd", "svdllm"), n_decoder_probe=8),
    "cpu": FactorConfig(eval_tokens=2048, calib_tokens=2048, grad_examples=8, n_facts=400, n_mc=24, n_fact_mc=48, n_probe=200,
                        probe=probing.ProbeConfig(steps=80), n_decoder_probe=100),
    "gpu": FactorConfig(eval_tokens=131_072, calib_tokens=65_536, context=1024, grad_examples=128,
                        n_facts=8000, n_mc=236, n_fact_mc=2000, mc_choices=4, n_probe=4000,
                        probe=probing.ProbeConfig(steps=300, hidden=256), encoder_calib_tokens=65_536,
                        encoder_grad_examples=1000, batch_size=8, decoder_probe_ratios=(0.05, 0.15, 0.25),
                        n_decoder_probe=2000, decoders=("llama-2-7b", "mistral-7b"),
                        encoders=("bert-base-uncased",)),
}


def factor_config_for(profile: Any) -> FactorConfig:
    """The :class:`FactorConfig` for a profile (or its name); ``profile.extra["factorization"]`` overrides fields."""
    from analysis.config import study_config

    return study_config(FACTOR_CONFIGS, profile, "factorization")


# --------------------------------------------------------------------------------------
# The seed's numbers (Pletenev 2024, Tables 2-4), as printed there
# --------------------------------------------------------------------------------------

SEED_RESULTS: dict[str, Any] = {
    "mmlu_llama2_7b": {
        "what": "Llama-2-7B, MMLU accuracy (4-way; chance 0.25), seed Table 2",
        "ratios": (0.0, 0.05, 0.10, 0.15, 0.25, 0.35),
        "svd": (0.456, 0.296, 0.265, 0.257, 0.255, 0.232),
        "fwsvd": (0.456, 0.337, 0.296, 0.274, 0.26, 0.236),
        "asvd": (0.456, 0.428, 0.417, 0.345, 0.285, 0.261),
    },
    "cola_bert_base": {
        "what": "BERT-base-uncased fine-tuned on CoLA, Matthews correlation, seed Table 2",
        "ratios": (0.0, 0.10, 0.20, 0.30, 0.40, 0.50),
        "svd": (0.59, 0.384, 0.156, 0.035, 0.0, 0.0),
        "fwsvd": (0.59, 0.552, 0.553, 0.388, 0.09, 0.0),
    },
    # Table 3: BERT-base probes (weighted F1), layers 9-12; "SVD 90%" keeps 90 % = ratio 0.10.
    # Each entry: {task: (probe on layers 9, 10, 11, 12), task + " control": (...)}
    "bert_probes": {
        ("none", 0.0): {"CoLA": (.824, .832, .832, .829), "SST-2": (.842, .851, .857, .836),
                        "TruthfulQA": (.747, .723, .796, .778), "CoLA control": (.525, .435, .545, .557),
                        "SST-2 control": (.456, .472, .483, .424), "TruthfulQA control": (.571, .576, .602, .393)},
        ("svd", 0.10): {"CoLA": (.765, .77, .774, .765), "SST-2": (.801, .79, .791, .79),
                        "TruthfulQA": (.788, .787, .654, .667), "CoLA control": (.577, .513, .571, .516),
                        "SST-2 control": (.395, .413, .459, .388), "TruthfulQA control": (.608, .501, .543, .407)},
        ("fwsvd", 0.10): {"CoLA": (.768, .775, .767, .77), "SST-2": (.808, .794, .808, .796),
                          "TruthfulQA": (.687, .728, .756, .61), "CoLA control": (.468, .556, .468, .551),
                          "SST-2 control": (.448, .423, .442, .485), "TruthfulQA control": (.494, .449, .475, .45)},
        ("svd", 0.30): {"CoLA": (.68, .6, .62, .639), "SST-2": (.736, .731, .711, .69),
                        "TruthfulQA": (.71, .655, .646, .694), "CoLA control": (.494, .542, .378, .318),
                        "SST-2 control": (.46, .415, .41, .398), "TruthfulQA control": (.508, .615, .478, .388)},
        ("fwsvd", 0.30): {"CoLA": (.631, .652, .637, .603), "SST-2": (.698, .718, .711, .716),
                          "TruthfulQA": (.614, .524, .636, .713), "CoLA control": (.561, .468, .562, .495),
                          "SST-2 control": (.485, .423, .396, .453), "TruthfulQA control": (.44, .57, .571, .584)},
        ("svd", 0.50): {"CoLA": (.529, .627, .451, .612), "SST-2": (.72, .718, .701, .672),
                        "TruthfulQA": (.583, .699, .632, .562), "CoLA control": (.426, .451, .578, .443),
                        "SST-2 control": (.44, .352, .378, .432), "TruthfulQA control": (.576, .653, .524, .408)},
        ("fwsvd", 0.50): {"CoLA": (.548, .443, .507, .441), "SST-2": (.736, .617, .672, .507),
                          "TruthfulQA": (.473, .494, .347, .537), "CoLA control": (.428, .318, .299, .431),
                          "SST-2 control": (.345, .34, .351, .381), "TruthfulQA control": (.397, .673, .636, .476)},
    },
    # Table 4: Llama-2-7B probes, its last four layers; "SVD 95%" = ratio 0.05.
    "llama_probes": {
        ("none", 0.0): {"CoLA": (.75, .774, .76, .711), "SST-2": (.905, .904, .914, .904),
                        "TruthfulQA": (.791, .795, .801, .782)},
        ("svd", 0.05): {"CoLA": (.74, .716, .667, .701), "SST-2": (.891, .873, .471, .87),
                        "TruthfulQA": (.757, .774, .297, .724)},
        ("fwsvd", 0.05): {"CoLA": (.761, .746, .758, .72), "SST-2": (.9, .893, .895, .874),
                          "TruthfulQA": (.785, .769, .797, .779)},
        ("asvd", 0.05): {"CoLA": (.726, .750, .768, .735), "SST-2": (.922, .920, .917, .910),
                         "TruthfulQA": (.798, .800, .811, .786)},
        ("svd", 0.15): {"CoLA": (.711, .651, .297, .532), "SST-2": (.812, .813, .345, .782),
                        "TruthfulQA": (.698, .196, .478, .523)},
        ("fwsvd", 0.15): {"CoLA": (.745, .761, .757, .714), "SST-2": (.891, .9, .876, .848),
                          "TruthfulQA": (.795, .748, .597, .535)},
        ("asvd", 0.15): {"CoLA": (.76, .767, .771, .745), "SST-2": (.894, .908, .904, .902),
                         "TruthfulQA": (.808, .821, .773, .776)},
        ("svd", 0.25): {"CoLA": (.565, .469, .347, .567), "SST-2": (.712, .712, .402, .5),
                        "TruthfulQA": (.252, .658, .462, .458)},
        ("fwsvd", 0.25): {"CoLA": (.719, .704, .71, .633), "SST-2": (.841, .843, .783, .793),
                          "TruthfulQA": (.498, .711, .526, .336)},
        ("asvd", 0.25): {"CoLA": (.680, .671, .673, .651), "SST-2": (.820, .815, .813, .813),
                         "TruthfulQA": (.777, .72, .760, .750)},
    },
    "claims": {
        "svd_collapses": "plain SVD loses most downstream quality already at 5-10 % compression "
                         "(MMLU 0.456 -> 0.296 at 5 %)",
        "weighted_hold": "weighted methods hold up better: ASVD > FWSVD > SVD at every ratio",
        "probes_reveal": "probes show damage inside the model (per layer, per task) that an aggregate "
                         "score alone does not; the hardest task (TruthfulQA) goes first",
    },
}


def seed_downstream_table() -> pd.DataFrame:
    """The seed's Table 2 (MMLU on Llama-2-7B, CoLA on BERT) as a long table."""
    rows = []
    for key in ("mmlu_llama2_7b", "cola_bert_base"):
        t = SEED_RESULTS[key]
        for m in ("svd", "fwsvd", "asvd"):
            for r, v in zip(t["ratios"], t.get(m, ())):
                rows.append({"seed table": t["what"], "method": METHOD_LABELS[m], "ratio": r, "value": v})
    return pd.DataFrame(rows)


def seed_probe_table(which: str = "bert_probes") -> pd.DataFrame:
    """The seed's probe table (Table 3 or 4) averaged over its four layers: task and control per setting."""
    rows = []
    for (m, r), tasks in SEED_RESULTS[which].items():
        row = {"method": "none" if m == "none" else METHOD_LABELS[m], "ratio": r}
        for t in probing.PROBE_TASKS:
            row[t] = sum(tasks[t]) / 4
            if f"{t} control" in tasks:
                row[f"{t} control"] = sum(tasks[f"{t} control"]) / 4
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Evaluation data: multiple choice and known facts
# --------------------------------------------------------------------------------------


def mc_items(n: int, choices: int = 4) -> list[dict]:
    """TruthfulQA multiple choice (BIG-bench ``truthful_qa/task_mc.json``): prompt, choices, answer 0.

    Each item keeps the true answer (first) and the first ``choices - 1`` false ones, in file order;
    the prompt is ``"Q: <question>\\nA:"``.
    """
    from analysis.data import bigbench_examples

    items = []
    for ex in bigbench_examples("truthful_qa/task_mc.json"):
        scores = ex["target_scores"]
        true = [a for a, s in scores.items() if s == 1][:1]
        false = [a for a, s in scores.items() if s == 0][: choices - 1]
        if len(true) == 1 and len(false) == choices - 1:
            items.append({"prompt": f"Q: {ex['input']}\nA:", "choices": true + false, "answer": 0})
        if len(items) == n:
            break
    if len(items) < n:
        raise ValueError(f"Only {len(items)} TruthfulQA questions have {choices} choices; asked for {n}.")
    return items


@torch.inference_mode()
def choice_logprobs(model, items: Sequence[dict], batch_size: int = 16) -> Tensor:
    """Summed log-probability of each choice (after a space) following its item's prompt, ``[n_items, n_choices]``."""
    seqs, spans = [], []
    for it in items:
        prefix = model.to_tokens(it["prompt"], prepend_bos=True)[0]
        for c in it["choices"]:
            full = torch.cat([prefix, model.to_tokens(" " + c.strip(), prepend_bos=False)[0]])
            seqs.append(full)
            spans.append((len(prefix), len(full)))
    out = torch.zeros(len(seqs))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    pad = model.tokenizer.pad_token_id or 0
    device = next(model.parameters()).device
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        ids = torch.full((len(idx), max(len(seqs[j]) for j in idx)), pad, dtype=torch.long)
        for k, j in enumerate(idx):
            ids[k, : len(seqs[j])] = seqs[j]
        logp = model(ids.to(device), return_type="logits").float().log_softmax(-1).cpu()
        for k, j in enumerate(idx):
            a, b = spans[j]
            out[j] = logp[k, a - 1 : b - 1].gather(-1, ids[k, a:b, None]).sum()
    return out.view(len(items), -1)


def fact_mc_items(n: int, offset: int, choices: int = 4, seed: int = 0) -> list[dict]:
    """Wikidata facts as multiple choice: the prompt, its answer and ``choices - 1`` distractors.

    Facts ``offset .. offset + n`` of :func:`analysis.data.facts` (relation-balanced order; pass the
    screening size as ``offset`` to keep them disjoint from the screened facts). Distractors are
    answers of other facts of the same relation (never one of this fact's accepted answers), drawn
    with ``seed``. The true answer comes first.
    """
    import random

    from analysis.data import facts

    every = facts()
    pool: dict[str, list[str]] = {}
    for rel, target in zip(every["relation"][:], every["target"][:]):
        pool.setdefault(rel, [])
        if target.strip() not in pool[rel]:
            pool[rel].append(target.strip())
    rows = every.select(range(offset, min(len(every), offset + n)))
    rng = random.Random(seed)
    items = []
    for row in rows:
        accepted = {a.strip() for a in row["answers"]}
        others = [a for a in pool[row["relation"]] if a not in accepted]
        if len(others) < choices - 1:
            continue
        items.append({"prompt": row["prompt"], "choices": [row["target"].strip(), *rng.sample(others, choices - 1)],
                      "answer": 0, "relation": row["relation"]})
    return items


def mc_accuracy(model, items: Sequence[dict], batch_size: int = 16) -> float:
    """Fraction of questions whose highest-likelihood choice is the true one."""
    lp = choice_logprobs(model, items, batch_size)
    return float((lp.argmax(-1) == torch.tensor([it["answer"] for it in items])).float().mean())


# --------------------------------------------------------------------------------------
# The decoder grid: perplexity, multiple choice, fact recall
# --------------------------------------------------------------------------------------


def _cells(cfg: FactorConfig) -> list[tuple[str, float]]:
    return [("none", 0.0)] + [(m, r) for m in cfg.methods for r in cfg.ratios]


@dataclass
class DecoderData:
    """What every decoder cell is scored on."""

    eval_tokens: Tensor
    calib_tokens: Tensor
    known: Any
    """The screened facts the uncompressed model knows (``datasets.Dataset``)."""
    screen: dict
    mc: list[dict]
    fact_mc: list[dict]


def decoder_data(model, cfg: FactorConfig) -> DecoderData:
    """Evaluation text, calibration text, known facts and multiple-choice items for ``model``."""
    from analysis.data import facts, filter_known, lm_tokens

    known, stats = cached("factorization-known-facts", lambda: filter_known(model, facts(cfg.n_facts)),
                          config={"n": cfg.n_facts, "v": CACHE_VERSION}, model=model.cfg.model_name)
    return DecoderData(lm_tokens(model.tokenizer, "eval", cfg.eval_tokens),
                       lm_tokens(model.tokenizer, "calib", cfg.calib_tokens), known, stats,
                       mc_items(cfg.n_mc, cfg.mc_choices), fact_mc_items(cfg.n_fact_mc, cfg.n_facts, cfg.mc_choices))


def decoder_context(model, cfg: FactorConfig, data: DecoderData, methods: Sequence[str]) -> compress.Context:
    """Calibration statistics for the decoder's factorized MLPs (only those ``methods`` need)."""
    kinds = sorted({k for m in methods for k in compress.STATS_NEEDED[m]})
    weights = compress.mlp_weights(model, cfg.decoder_layers)
    if not kinds:
        return compress.Context(model=model)
    return compress.calibration_stats(model, data.calib_tokens, weights, kinds=kinds, context=cfg.context,
                                      batch_size=cfg.batch_size, max_grad_examples=cfg.grad_examples)


def score_decoder(model, cfg: FactorConfig, data: DecoderData) -> dict[str, float]:
    """Perplexity, fact and TruthfulQA multiple-choice accuracy, and known-fact recall of ``model`` now."""
    from analysis.evaluate import fact_recall, lm_score

    lm = lm_score(model, data.eval_tokens, cfg.context, batch_size=cfg.batch_size)
    recall = fact_recall(model, data.known["prompt"][:], data.known["target"][:]).float().mean().item() \
        if len(data.known) else float("nan")
    return {"perplexity": lm.perplexity, "next-token acc": lm.accuracy,
            "fact mc acc": mc_accuracy(model, data.fact_mc, batch_size=cfg.batch_size),
            "truthfulqa mc acc": mc_accuracy(model, data.mc, batch_size=cfg.batch_size), "fact recall": recall}


def decoder_grid(model, cfg: FactorConfig, data: DecoderData | None = None, state: dict | None = None) -> pd.DataFrame:
    """One row per (method, ratio) cell, plus the uncompressed model: scores, rank and parameters removed.

    ``state`` (a dict shared with :func:`decoder_probe_grid`) keeps the calibration statistics and
    decompositions, which are built only when some cell is not cached yet.
    """
    data = data or decoder_data(model, cfg)
    state = {} if state is None else state

    def run(cell):
        method, ratio = cell
        if method == "none":
            return {**score_decoder(model, cfg, data), "removed": 0.0, "rank W_in": None}
        if "ctx" not in state:
            state["ctx"] = decoder_context(model, cfg, data, cfg.methods)
            state["svd"] = {}
        plan = compress.factorization_plan(model, method, {l: ratio for l in _layers(model, cfg.decoder_layers)},
                                           context=state["ctx"], cache=state["svd"])
        with plan.applied(model) as report:
            scores = score_decoder(model, cfg, data)
        d_in, d_out = compress.to_linear("blocks.0.mlp.W_in", model.blocks[0].mlp.W_in).shape
        return {**scores, "removed": 1 - report.ratio, "rank W_in": compress.rank_for_ratio(d_in, d_out, ratio)}

    rows = []
    for cell in progress(_cells(cfg), desc="decoder grid"):
        out = cached("factorization-decoder", lambda: run(cell),
                     config={"cfg": _decoder_key(cfg), "cell": cell, "v": CACHE_VERSION}, model=model.cfg.model_name)
        rows.append({"method": METHOD_LABELS.get(cell[0], "none"), "ratio": cell[1], **out})
    return pd.DataFrame(rows)


def _layers(model, layers) -> list[int]:
    return list(range(model.cfg.n_layers)) if layers is None else list(layers)


def _decoder_key(cfg: FactorConfig) -> dict:
    keys = ("decoder_layers", "eval_tokens", "calib_tokens", "context", "grad_examples", "n_facts", "n_mc", "n_fact_mc",
            "mc_choices", "batch_size")
    return {k: getattr(cfg, k) for k in keys}


# --------------------------------------------------------------------------------------
# The encoder grid: probes with control tasks on every layer
# --------------------------------------------------------------------------------------


def probe_tasks(cfg: FactorConfig) -> dict[str, Any]:
    """The probing datasets, by the seed's task name (:data:`analysis.probing.PROBE_TASKS`)."""
    from analysis.data import load_task

    return {seed: load_task(ours, n=cfg.n_probe, seed=0) for seed, (ours, _) in probing.PROBE_TASKS.items()}


def _task_loss(encoder, ds, cfg: FactorConfig):
    """Cross-entropy of a logistic head (fitted on the final layer) for the rows of ``ds``: FWSVD's task loss."""
    L = encoder.cfg.n_layers
    feats = probing.hidden_states(encoder, ds["text"][:])[L - 1 : L]
    y = torch.tensor(ds["label"][:])
    predict = probing.train_probes(feats, y[None], int(y.max()) + 1, hidden=0, steps=cfg.probe.steps,
                                   lr=cfg.probe.lr, seed=0)
    hook = probing.feature_hook(encoder, L - 1)

    def loss(model, tokens, mask, row):
        got = []
        with model.hooks(fwd_hooks=[(hook, lambda a, hook: got.append(a))]):
            model.encoder_output(tokens, None, mask)
        pooled = (got[0] * (mask / mask.sum(1, keepdim=True))[..., None]).sum(1)  # [1, d_model]
        logits = predict.logits(pooled[None])
        return torch.nn.functional.cross_entropy(logits[0], y[row : row + 1])

    return loss


def encoder_context(encoder, cfg: FactorConfig, methods: Sequence[str]) -> compress.Context:
    """Activation statistics on held-out prose and Fisher rows from the acceptability task."""
    from analysis.data import lm_tokens, load_task

    weights = compress.mlp_weights(encoder)
    kinds = sorted({k for m in methods for k in compress.STATS_NEEDED[m]} - {"grad2"})
    stats: dict = {}
    if kinds:
        toks = lm_tokens(encoder.tokenizer, "calib", cfg.encoder_calib_tokens)
        stats.update(compress.calibration_stats(encoder, toks, weights, kinds=kinds, context=128,
                                                batch_size=cfg.batch_size).stats)
    if "fwsvd" in methods:
        ds = load_task(probing.PROBE_TASKS["CoLA"][0], n=cfg.encoder_grad_examples, seed=1)
        enc = encoder.tokenizer(ds["text"][:], return_tensors="pt", padding=True, truncation=True, max_length=128)
        stats.update(compress.calibration_stats(encoder, enc["input_ids"], weights, kinds=("grad2",),
                                                attention_mask=enc["attention_mask"],
                                                loss_fn=_task_loss(encoder, ds, cfg)).stats)
    return compress.Context(model=encoder, stats=stats)


def encoder_grid(encoder, cfg: FactorConfig, tasks: dict | None = None) -> dict[tuple[str, float], dict]:
    """``{(method, ratio): {task: ProbeResult}}`` for every cell (``("none", 0.0)``: uncompressed)."""
    tasks = tasks or probe_tasks(cfg)
    state: dict = {}

    def run(cell):
        method, ratio = cell
        if method == "none":
            return {t: probing.probe_dataset(encoder, ds, cfg.probe) for t, ds in tasks.items()}
        if "ctx" not in state:
            state["ctx"] = encoder_context(encoder, cfg, cfg.methods)
            state["svd"] = {}
        plan = compress.factorization_plan(encoder, method, ratio, context=state["ctx"], cache=state["svd"])
        with plan.applied(encoder):
            return {t: probing.probe_dataset(encoder, ds, cfg.probe) for t, ds in tasks.items()}

    key = {k: getattr(cfg, k) for k in ("n_probe", "probe", "encoder_calib_tokens", "encoder_grad_examples")}
    return {cell: cached("factorization-encoder", lambda: run(cell), config={"cfg": key, "cell": cell,
                                                                            "v": CACHE_VERSION},
                         model=encoder.cfg.model_name)
            for cell in progress(_cells(cfg), desc="encoder grid")}


def probe_frame(grid: dict, kind: str = "mlp", layers: Sequence[int] | None = None) -> pd.DataFrame:
    """Probe accuracy (mean over ``layers``, default the top 4 as in the seed), control and selectivity per cell."""
    rows = []
    for (m, r), results in grid.items():
        row = {"method": METHOD_LABELS.get(m, "none"), "ratio": r}
        for t, res in results.items():
            L = res.acc[kind]["task"].shape[0]
            sel = list(layers) if layers is not None else list(range(max(0, L - 4), L))
            s = res.summary(kind, sel)
            row[t], row[f"{t} control"], row[f"{t} selectivity"] = s["task"], s["control"], s["selectivity"]
        rows.append(row)
    return pd.DataFrame(rows)


def decoder_probe_grid(model, cfg: FactorConfig, data: DecoderData | None = None,
                       state: dict | None = None) -> dict[tuple[str, float], dict]:
    """``{(method, ratio): {task: ProbeResult}}`` on the decoder, at :attr:`FactorConfig.decoder_probe_ratios`."""
    from analysis.data import load_task

    tasks = {seed: load_task(ours, n=cfg.n_decoder_probe, seed=0) for seed, (ours, _) in probing.PROBE_TASKS.items()}
    state = {} if state is None else state

    def run(cell):
        method, ratio = cell
        if method == "none":
            return {t: probing.probe_dataset(model, ds, cfg.probe, batch_size=cfg.batch_size) for t, ds in tasks.items()}
        if "ctx" not in state:
            d = data or decoder_data(model, cfg)
            state["ctx"] = decoder_context(model, cfg, d, cfg.methods)
            state["svd"] = {}
        plan = compress.factorization_plan(model, method, {l: ratio for l in _layers(model, cfg.decoder_layers)},
                                           context=state["ctx"], cache=state["svd"])
        with plan.applied(model):
            return {t: probing.probe_dataset(model, ds, cfg.probe, batch_size=cfg.batch_size) for t, ds in tasks.items()}

    cells = [("none", 0.0)] + [(m, r) for m in cfg.decoder_probe_methods for r in cfg.decoder_probe_ratios]
    key = {"decoder": _decoder_key(cfg), "n": cfg.n_decoder_probe, "probe": cfg.probe}
    return {cell: cached("factorization-decoder-probes", lambda: run(cell),
                         config={"cfg": key, "cell": cell, "v": CACHE_VERSION}, model=model.cfg.model_name)
            for cell in progress(cells, desc="decoder probes")}


# --------------------------------------------------------------------------------------
# The seed's claims, checked
# --------------------------------------------------------------------------------------


def mean_damage(frame: pd.DataFrame, column: str, log: bool = False) -> pd.Series:
    """Damage per method averaged over the grid's ratios: baseline - value, or mean log(value / baseline)."""
    base = float(frame.loc[frame["method"] == "none", column].iloc[0])
    out = {}
    for m, g in frame[frame["method"] != "none"].groupby("method", sort=False):
        v = g[column].astype(float)
        out[m] = float((v / base).apply(math.log).mean()) if log else float((base - v).mean())
    return pd.Series(out, name=f"mean damage: {column}")


def discordant_pairs(decoder: pd.DataFrame, probes: pd.DataFrame, grid: dict, margin: float = 0.05) -> list[str]:
    """Pairs of compressed cells that perplexity ranks one way and a probe (top-4 layers) the other, by > ``margin``.

    A pair counts only when the probe gap also exceeds twice the larger seed standard deviation.
    """
    merged = decoder.merge(probes, on=["method", "ratio"])
    merged = merged[merged["method"] != "none"].reset_index(drop=True)
    keys = {(METHOD_LABELS.get(m, "none"), r): (m, r) for m, r in grid}
    out = []
    for t in probing.PROBE_TASKS:
        for i, a in merged.iterrows():
            for j, b in merged.iterrows():
                if a["perplexity"] >= b["perplexity"]:
                    continue  # a is the better cell by perplexity
                gap = float(b[t] - a[t])  # > 0: the probe prefers b
                res_a, res_b = grid[keys[(a["method"], a["ratio"])]][t], grid[keys[(b["method"], b["ratio"])]][t]
                L = res_a.acc["mlp"]["task"].shape[0]
                top = list(range(max(0, L - 4), L))
                sd = max(float(res_a.std()[top].mean()), float(res_b.std()[top].mean()))
                if gap > max(margin, 2 * sd):
                    out.append(f"{t}: {a['method']} {a['ratio']:.0%} has lower perplexity ({a['perplexity']:.3g} vs "
                               f"{b['perplexity']:.3g}) than {b['method']} {b['ratio']:.0%} but a probe "
                               f"{gap:.2f} worse ({a[t]:.2f} vs {b[t]:.2f})")
    return out


def verdicts(decoder: pd.DataFrame, probes: pd.DataFrame, grid: dict) -> pd.DataFrame:
    """The seed's three claims, each with a computed verdict and the evidence behind it.

    ``decoder``: :func:`decoder_grid`; ``probes``: :func:`probe_frame` of the decoder's probe
    ``grid`` (:func:`decoder_probe_grid`), so that probes and perplexity judge the same models.
    """
    ppl = mean_damage(decoder, "perplexity", log=True)
    fmt = lambda m: f"{m} x{math.exp(ppl[m]):.3g}"  # noqa: E731
    rows = [("SVD collapses fastest (perplexity)", bool(ppl.idxmax() == "SVD"),
             "geometric-mean perplexity increase over the grid: " + ", ".join(fmt(m) for m in ppl.index))]
    aware = [m for m in ("ASVD", "SVD-LLM") if m in ppl]
    better = bool("SVD" in ppl and aware and all(ppl[m] < ppl["SVD"] for m in aware))
    rows.append(("activation-aware methods (ASVD, SVD-LLM) hold up better than SVD", better,
                 "; ".join(fmt(m) for m in [*aware, "SVD"] if m in ppl)))
    pairs = discordant_pairs(decoder, probes, grid)
    rows.append(("probes reveal damage that perplexity hides", bool(pairs),
                 "; ".join(pairs[:4]) + (f" (+{len(pairs) - 4} more)" if len(pairs) > 4 else "") if pairs else
                 "no pair of compressed models that perplexity and a probe rank in opposite order by > 0.05"))
    return pd.DataFrame(rows, columns=["claim", "holds here", "evidence (ours)"])


def rank_table(model, ratios: Sequence[float], layers: Sequence[int] | None = None) -> pd.DataFrame:
    """For each ratio: the rank each MLP matrix shape keeps, of how many, and the parameters actually removed."""
    shapes = sorted({tuple(compress.to_linear(w, dict(model.named_parameters())[compress.parameter_name(model, w)]).shape)
                     for w in compress.mlp_weights(model, layers)})
    rows = []
    for r in ratios:
        row = {"ratio": r}
        for d_in, d_out in shapes:
            k = compress.rank_for_ratio(d_in, d_out, r)
            row[f"rank of [{d_in}, {d_out}] (of {min(d_in, d_out)})"] = k
            row[f"removed [{d_in}, {d_out}]"] = 1 - compress.factor_params(d_in, d_out, k) / (d_in * d_out)
        rows.append(row)
    return pd.DataFrame(rows)
