"""analysis.studies.capability and analysis.wanda on SmolLM2: head ablation on real facts, the
known-fact set, the domain texts, the probe's features and Wanda under grouped-query attention,
each against a direct computation."""

from __future__ import annotations

import pytest
import torch

from analysis import compress, data, hooks, wanda
from analysis.evaluate import fact_recall
from analysis.studies import capability

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["The Eiffel Tower is located in the city of", "The capital of Japan is"]
TARGETS = [" Paris", " Tokyo"]


@torch.no_grad()
def test_head_ablation_on_facts_matches_hooked_forward(smollm2, eval_tokens):
    layer, heads = 3, (0, 4)
    res = capability.head_ablation(smollm2, eval_tokens[:64], PROMPTS, TARGETS, context=32, layers=[layer])
    assert res.loss[layer].isfinite().all() and res.loss[layer + 1].isnan().all()
    toks = [smollm2.to_tokens(p)[0] for p in PROMPTS]  # one prompt at a time: no padding
    tid = [smollm2.to_tokens(t, prepend_bos=False)[0, 0] for t in TARGETS]
    for h in heads:

        def ablate(z, hook, h=h):
            z = z.clone()
            z[:, :, h] = 0
            return z

        drops, hits = [], []
        for t, target in zip(toks, tid):
            clean = smollm2(t[None])[0, -1].float().log_softmax(-1)
            lp = smollm2.run_with_hooks(t[None], fwd_hooks=[(hooks.z(layer), ablate)])[0, -1].float().log_softmax(-1)
            drops.append(float(clean[target] - lp[target]))
            hits.append(float(clean.argmax() == target) - float(lp.argmax() == target))
        assert res.logp[layer, h].item() == pytest.approx(sum(drops) / 2, abs=1e-3)
        assert res.recall[layer, h].item() == pytest.approx(sum(hits) / 2)


def test_known_fact_set_takes_the_eval_split_of_the_shared_screen(smollm2):
    cfg = capability.CONFIGS["smoke"]
    facts = capability.known_fact_set(smollm2, cfg)
    splits = data.fact_splits(smollm2, cfg.n_screen)
    want = splits["eval"].select(range(min(cfg.n_facts, len(splits["eval"]))))
    assert facts.prompts == list(want["prompt"]) and facts.targets == list(want["target"])
    assert not set(want["id"]) & set(splits["score"]["id"])  # nothing here was used to score anything
    assert facts.screen == data.known_facts(smollm2, cfg.n_screen, cache=True)[1] and facts.n_screened == cfg.n_screen
    assert fact_recall(smollm2, facts.prompts, facts.targets).all()


def test_domain_tokens_give_each_domain_its_own_text(smollm2):
    domains = capability.CONFIGS["cpu"].domains
    toks = capability.domain_tokens(smollm2, domains, 96)
    assert {k: v.shape for k, v in toks.items()} == {k: (96,) for k in domains}
    bos = smollm2.tokenizer.bos_token_id
    assert all(int(v[0]) == bos for v in toks.values())  # each text is wrapped in BOS/EOS
    assert len({tuple(v.tolist()) for v in toks.values()}) == len(domains)  # no two domains share their text
    with pytest.raises(ValueError, match="Unknown domain"):
        capability.domain_tokens(smollm2, ("nyt",), 96)


def test_pooled_features_are_unpadded_means(smollm2):
    texts = ["A short review.", "This film is a long, slow and beautiful meditation on grief."]
    feats = capability.pooled_features(smollm2, texts, batch_size=2)
    for i, t in enumerate(texts):  # one at a time: no padding at all
        _, cache = smollm2.run_with_cache(smollm2.to_tokens(t))
        torch.testing.assert_close(feats[i], cache[capability.PROBE_HOOK][0].mean(0), atol=1e-4, rtol=1e-4)


def test_wanda_heads_add_up_to_the_attention_block(smollm2, eval_tokens):
    norms = wanda.input_norms(smollm2, eval_tokens[:128], context=64)
    scores = wanda.wanda_head_scores(smollm2, norms)
    assert scores.shape == (smollm2.cfg.n_layers, smollm2.cfg.n_heads) and (scores > 0).all()
    params = dict(smollm2.named_parameters())
    for layer in (0, 17):  # grouped K/V (3 query heads each) are shared out, not double counted
        total = 0.0
        for w in compress.ATTN_WEIGHTS:
            name = f"blocks.{layer}.attn.{w}"
            lin = compress.to_linear(name, params[compress.parameter_name(smollm2, name)].detach())
            total += float((lin.abs() * norms[hooks.input_hook(name, smollm2)][:, None]).sum())
        assert scores[layer].sum().item() == pytest.approx(total, rel=1e-4)
