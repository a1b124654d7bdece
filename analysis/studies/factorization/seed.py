"""The seed's numbers (Pletenev 2024, Tables 2-4), as printed there, and ours set beside them."""

from __future__ import annotations

from typing import Any

import pandas as pd

from analysis.studies.factorization.config import METHOD_LABELS

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
        ("none", 0.0): {
            "CoLA": (0.824, 0.832, 0.832, 0.829),
            "SST-2": (0.842, 0.851, 0.857, 0.836),
            "TruthfulQA": (0.747, 0.723, 0.796, 0.778),
            "CoLA control": (0.525, 0.435, 0.545, 0.557),
            "SST-2 control": (0.456, 0.472, 0.483, 0.424),
            "TruthfulQA control": (0.571, 0.576, 0.602, 0.393),
        },
        ("svd", 0.10): {
            "CoLA": (0.765, 0.77, 0.774, 0.765),
            "SST-2": (0.801, 0.79, 0.791, 0.79),
            "TruthfulQA": (0.788, 0.787, 0.654, 0.667),
            "CoLA control": (0.577, 0.513, 0.571, 0.516),
            "SST-2 control": (0.395, 0.413, 0.459, 0.388),
            "TruthfulQA control": (0.608, 0.501, 0.543, 0.407),
        },
        ("fwsvd", 0.10): {
            "CoLA": (0.768, 0.775, 0.767, 0.77),
            "SST-2": (0.808, 0.794, 0.808, 0.796),
            "TruthfulQA": (0.687, 0.728, 0.756, 0.61),
            "CoLA control": (0.468, 0.556, 0.468, 0.551),
            "SST-2 control": (0.448, 0.423, 0.442, 0.485),
            "TruthfulQA control": (0.494, 0.449, 0.475, 0.45),
        },
        ("svd", 0.30): {
            "CoLA": (0.68, 0.6, 0.62, 0.639),
            "SST-2": (0.736, 0.731, 0.711, 0.69),
            "TruthfulQA": (0.71, 0.655, 0.646, 0.694),
            "CoLA control": (0.494, 0.542, 0.378, 0.318),
            "SST-2 control": (0.46, 0.415, 0.41, 0.398),
            "TruthfulQA control": (0.508, 0.615, 0.478, 0.388),
        },
        ("fwsvd", 0.30): {
            "CoLA": (0.631, 0.652, 0.637, 0.603),
            "SST-2": (0.698, 0.718, 0.711, 0.716),
            "TruthfulQA": (0.614, 0.524, 0.636, 0.713),
            "CoLA control": (0.561, 0.468, 0.562, 0.495),
            "SST-2 control": (0.485, 0.423, 0.396, 0.453),
            "TruthfulQA control": (0.44, 0.57, 0.571, 0.584),
        },
        ("svd", 0.50): {
            "CoLA": (0.529, 0.627, 0.451, 0.612),
            "SST-2": (0.72, 0.718, 0.701, 0.672),
            "TruthfulQA": (0.583, 0.699, 0.632, 0.562),
            "CoLA control": (0.426, 0.451, 0.578, 0.443),
            "SST-2 control": (0.44, 0.352, 0.378, 0.432),
            "TruthfulQA control": (0.576, 0.653, 0.524, 0.408),
        },
        ("fwsvd", 0.50): {
            "CoLA": (0.548, 0.443, 0.507, 0.441),
            "SST-2": (0.736, 0.617, 0.672, 0.507),
            "TruthfulQA": (0.473, 0.494, 0.347, 0.537),
            "CoLA control": (0.428, 0.318, 0.299, 0.431),
            "SST-2 control": (0.345, 0.34, 0.351, 0.381),
            "TruthfulQA control": (0.397, 0.673, 0.636, 0.476),
        },
    },
    # Table 4: Llama-2-7B probes, its last four layers; "SVD 95%" = ratio 0.05.
    "llama_probes": {
        ("none", 0.0): {
            "CoLA": (0.75, 0.774, 0.76, 0.711),
            "SST-2": (0.905, 0.904, 0.914, 0.904),
            "TruthfulQA": (0.791, 0.795, 0.801, 0.782),
        },
        ("svd", 0.05): {
            "CoLA": (0.74, 0.716, 0.667, 0.701),
            "SST-2": (0.891, 0.873, 0.471, 0.87),
            "TruthfulQA": (0.757, 0.774, 0.297, 0.724),
        },
        ("fwsvd", 0.05): {
            "CoLA": (0.761, 0.746, 0.758, 0.72),
            "SST-2": (0.9, 0.893, 0.895, 0.874),
            "TruthfulQA": (0.785, 0.769, 0.797, 0.779),
        },
        ("asvd", 0.05): {
            "CoLA": (0.726, 0.750, 0.768, 0.735),
            "SST-2": (0.922, 0.920, 0.917, 0.910),
            "TruthfulQA": (0.798, 0.800, 0.811, 0.786),
        },
        ("svd", 0.15): {
            "CoLA": (0.711, 0.651, 0.297, 0.532),
            "SST-2": (0.812, 0.813, 0.345, 0.782),
            "TruthfulQA": (0.698, 0.196, 0.478, 0.523),
        },
        ("fwsvd", 0.15): {
            "CoLA": (0.745, 0.761, 0.757, 0.714),
            "SST-2": (0.891, 0.9, 0.876, 0.848),
            "TruthfulQA": (0.795, 0.748, 0.597, 0.535),
        },
        ("asvd", 0.15): {
            "CoLA": (0.76, 0.767, 0.771, 0.745),
            "SST-2": (0.894, 0.908, 0.904, 0.902),
            "TruthfulQA": (0.808, 0.821, 0.773, 0.776),
        },
        ("svd", 0.25): {
            "CoLA": (0.565, 0.469, 0.347, 0.567),
            "SST-2": (0.712, 0.712, 0.402, 0.5),
            "TruthfulQA": (0.252, 0.658, 0.462, 0.458),
        },
        ("fwsvd", 0.25): {
            "CoLA": (0.719, 0.704, 0.71, 0.633),
            "SST-2": (0.841, 0.843, 0.783, 0.793),
            "TruthfulQA": (0.498, 0.711, 0.526, 0.336),
        },
        ("asvd", 0.25): {
            "CoLA": (0.680, 0.671, 0.673, 0.651),
            "SST-2": (0.820, 0.815, 0.813, 0.813),
            "TruthfulQA": (0.777, 0.72, 0.760, 0.750),
        },
    },
    "claims": {
        "svd_collapses": "SVD collapses at 5–10% (MMLU 0.456 -> 0.296 at 5 %, 0.265 at 10 %)",
        "weighted_hold": "ASVD > FWSVD > SVD at every ratio",
        "degradation": "compressing to 30-50 % results in complete degradation, producing no usable output",
        "baselines": "quantization and pruning result in a more moderate average degradation of 10-20 %, on same "
        "compression",
        "rq1": "a strong correlation between compression and loss of model quality, confirming RQ1 (the "
        "compressed models lost syntactic and semantic information, in line with the performance decline)",
        "rq3": "challenging tasks such as TruthfulQA suffer disproportionately; simpler tasks like SST-2 remain "
        "largely intact",
        "decoder_worse": "this effect is more pronounced in decoder models compared to encoder models",
        "selectivity": "for SST-2 and CoLA the difference between the real and control estimates is greater than "
        "0.2 F-score in most cases",
        "probes_reveal": "none: our own question (do probes see damage that perplexity hides?), not a claim of the seed",
    },
}


def seed_claims() -> pd.DataFrame:
    """The seed's claims in its own words, one row each (our own question, "probes_reveal", left out)."""
    found = {k: v for k, v in SEED_RESULTS["claims"].items() if k != "probes_reveal"}
    return pd.Series(found, name="claim (the seed's, not ours)").to_frame()


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
    """The seed's probe table (Table 3 or 4) averaged over its four layers: every task of the seed (CoLA
    included, which we do not probe) and its control, per setting."""
    rows = []
    for (m, r), tasks in SEED_RESULTS[which].items():
        row = {"method": "none" if m == "none" else METHOD_LABELS[m], "ratio": r}
        row.update({t: sum(v) / len(v) for t, v in tasks.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def decoder_beside_seed(decoder: pd.DataFrame, model_name: str) -> pd.DataFrame:
    """The seed's Llama-2-7B MMLU accuracy (Table 2) per method and ratio, beside our decoder's MMLU
    accuracy, fact multiple-choice accuracy and perplexity at the same ratios (None where either grid
    lacks the cell). ``decoder``: the frame of :func:`~analysis.studies.factorization.run.decoder_grid`."""
    seed = SEED_RESULTS["mmlu_llama2_7b"]
    rows = []
    seed_key = {"asvd_rank": "asvd"}  # the seed's ASVD is ASVD with its rank search
    for m in ("svd", "fwsvd", "asvd_rank", "asvd", "svdllm"):
        for i, r in enumerate(seed["ratios"]):
            ours = decoder[(decoder["method"] == ("none" if r == 0 else METHOD_LABELS[m])) & (decoder["ratio"] == r)]
            rows.append(
                {
                    "method": METHOD_LABELS[m],
                    "ratio": r,
                    "seed: Llama-2-7B MMLU": seed[seed_key.get(m, m)][i]
                    if seed_key.get(m, m) in seed and m != "asvd"
                    else None,
                    f"ours: {model_name} MMLU": ours["mmlu acc"].squeeze() if len(ours) else None,
                    f"ours: {model_name} fact MC": ours["fact mc acc"].squeeze() if len(ours) else None,
                    "ours: perplexity": ours["perplexity"].squeeze() if len(ours) else None,
                }
            )
    return pd.DataFrame(rows).set_index(["method", "ratio"])


def probes_beside_seed(probes: pd.DataFrame, encoder_name: str) -> pd.DataFrame:
    """The seed's BERT-base probe table (Table 3, top-4-layer mean) stacked above our encoder's
    ``probes``, on the tasks (and controls) both have, with a ``source`` index level."""
    seed = seed_probe_table("bert_probes").assign(source="seed: BERT-base, weighted F1")
    cols = [c for c in seed.columns if c not in ("method", "ratio", "source") and c in probes.columns]
    ours = probes[["method", "ratio", *cols]].assign(source=f"ours: {encoder_name}, accuracy")
    return pd.concat([seed[["method", "ratio", *cols, "source"]], ours]).set_index(["source", "method", "ratio"])
