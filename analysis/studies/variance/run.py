"""Seed 003's experiments on one model, each cached on disk by its configuration and the model.

- :func:`fits`: streamed block statistics on training-split text, the block maps (full and at the
  seed's compression), the least-squares tuned lens, in-sample linearity scores and the PCA of
  every layer's residual stream;
- :func:`linearity`: block maps refitted per position convention (all positions, or the attention
  sink left out), in-sample scores, held-out R² per block and per window, clean and replaced upstream,
  of the output and the update;
- :func:`directions`: rogue dimensions, variance vs predictive subspaces (principal angles, CCA),
  per-window CCA against a random subspace, and the loss of removing either subspace per window;
- :func:`ablation`: loss when top-k variance / gradient / readout / random directions are removed,
  and when only the top-r variance directions are kept;
- :func:`replacement`: perplexity with the last block, then the last k blocks, replaced;
- :func:`quantization`: direct RTN, rotated RTN and factor-then-RTN at matched bits, and every
  block weight's direct and factored errors;
- :func:`exits`: logit and tuned lens, early exit against the confidence threshold.

The chapter calls these steps one by one, with its text between them. Each returns a typed result
(:mod:`~analysis.studies.variance.results`) or a table; the cache stores the plain dicts it always
has, so results computed before the typed results existed are still found.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pandas as pd
import torch
from transformer_lens import HookedTransformer

from analysis import geometry, hooks
from analysis.cache import cached
from analysis.compress import linear_block, rotation
from analysis.compress.linear import to_linear
from analysis.data import lm_tokens
from analysis.evaluate import LMScore, lm_score
from analysis.models import model_key
from analysis.progress import progress
from analysis.studies.variance.config import CACHE_VERSION, VarianceConfig
from analysis.studies.variance.results import Directions, Exits, Fits, Linearity, Quantization


def _cached(name: str, cfg: VarianceConfig, model, compute, **key):
    """``key``: what else this step's result depends on (a step's own version, fields left out of ``cfg``'s key)."""
    return cached(f"variance/{name}", compute, config={"cfg": cfg, "v": CACHE_VERSION, **key}, model=model_key(model))


LINEARITY_VERSION = 2
"""The linearity step's own version: 2 refits the maps in float64, per position convention, and keeps
per-window errors (the verdicts' units)."""

CONVENTIONS = {"all positions": 0, "position 0 left out": geometry.SINK_POSITIONS}
"""The two position conventions of the linearity statistics: every window position, or all but the
attention sink at position 0 (``skip_first``)."""

STEP_VERSIONS = {"directions": 2, "quantization": 2, "exits": 2}
"""Steps whose result changed after ``CACHE_VERSION`` 1: ``directions`` gained the per-window CCA
units and the removal gap, ``quantization`` the per-window scores on ``cfg.quant_tokens`` and every
block's errors, ``exits`` the easy share's interval over windows."""


def tokens(model: HookedTransformer, cfg: VarianceConfig) -> dict[str, torch.Tensor]:
    """``fit`` and ``direction`` tokens (training split) and ``eval`` tokens (held-out split)."""
    return {
        "fit": lm_tokens(model.tokenizer, "train", n_tokens=cfg.fit_tokens),
        "direction": lm_tokens(model.tokenizer, "train", n_tokens=cfg.direction_tokens),
        "eval": lm_tokens(model.tokenizer, "eval", n_tokens=cfg.eval_tokens),
    }


def held_out(model: HookedTransformer, n_tokens: int) -> torch.Tensor:
    """The first ``n_tokens`` tokens of the held-out split: every step that scores reads these, and
    none of them ever fits, chooses or calibrates anything (that is the training split's, :func:`tokens`)."""
    return lm_tokens(model.tokenizer, "eval", n_tokens=n_tokens)


CHOOSING = ("fit", "direction")
"""The roles of :func:`tokens` whose text fits maps, lenses and directions; the rest only score."""


def depth_layers(model: HookedTransformer, fractions) -> list[int]:
    """Layer indices at fractions of the depth (deduplicated, in order)."""
    L = model.cfg.n_layers
    return sorted({min(L - 1, int(round(f * (L - 1)))) for f in fractions})


def _half(m):
    """A fitted map with float32 tensors (halves the cache; maps compute in float64 anyway)."""
    return dataclasses.replace(
        m, **{f.name: getattr(m, f.name).float() for f in dataclasses.fields(m) if torch.is_tensor(getattr(m, f.name))}
    )


def fits(model: HookedTransformer, cfg: VarianceConfig) -> Fits:
    """Block maps, tuned-lens translators, in-sample scores and per-layer PCA, from one streamed pass."""

    def compute():
        tok = tokens(model, cfg)["fit"]
        st = geometry.block_stats(model, tok, cfg.context, cfg.batch_size, to_final=True)
        L, d = model.cfg.n_layers, model.cfg.d_model
        multi = range(L - max(cfg.multi_blocks), L)
        rows, full, ranked, lens, pcas = [], {}, {}, {}, {}
        for l, s in enumerate(progress(st["block"], desc="block maps")):
            full[l] = _half(linear_block.fit_block(s, l))
            if l in multi:
                ranked[l] = _half(
                    linear_block.fit_block(s, l, linear_block.rank_for_ratio(model, l, cfg.replace_ratio))
                )
            if l < L - 1:
                lens[l] = _half(geometry.fit_map(st["final"][l]))
            p = geometry.pca(s)
            eig = (p.variances, p.components)
            pcas[l] = geometry.PCA(p.mean.float(), p.components.float(), p.variances.float())
            upd = geometry.pca(s.update_stats(), "y")
            rows.append(
                {
                    "block": l,
                    "score with residual": geometry.score_from_stats(s, eig),
                    "score without residual": geometry.score_from_stats(s.update_stats(), eig),
                    "ridge": full[l].ridge,
                    "tokens per dim": s.n / (d + 1),
                    "update variance in top 16": upd.retained(min(16, d)),
                }
            )
        return {
            "frame": pd.DataFrame(rows).set_index("block"),
            "full": full,
            "ranked": ranked,
            "lens": lens,
            "pca": pcas,
        }

    return Fits(**_cached("fits", cfg, model, compute))


def linearity(model: HookedTransformer, cfg: VarianceConfig) -> Linearity:
    """Per position convention (:data:`CONVENTIONS`) and block: the full affine map fitted on the fit
    tokens (training split), its in-sample scores, and its held-out R² of the output and the update,
    clean and replaced upstream, pooled and window by window, on ``cfg.linearity_tokens`` held-out tokens."""

    def compute():
        fit_tok = tokens(model, cfg)["fit"]
        ev = lm_tokens(model.tokenizer, "eval", n_tokens=cfg.linearity_tokens)
        st = geometry.block_stats(model, fit_tok, cfg.context, cfg.batch_size, skip_first=geometry.SINK_POSITIONS)
        d = model.cfg.d_model
        frames, windows = {}, []
        for conv, skip in CONVENTIONS.items():
            block = st["block_skip" if skip else "block"]
            maps = {l: geometry.fit_map(s) for l, s in enumerate(block)}
            frame = pd.DataFrame(
                [
                    {
                        "block": l,
                        "score with residual": geometry.score_from_stats(s),
                        "score without residual": geometry.score_from_stats(s.update_stats()),
                        "ridge": maps[l].ridge,
                        "tokens per dim": s.n / (d + 1),
                    }
                    for l, s in enumerate(block)
                ]
            ).set_index("block")
            for upstream in ("clean", "replaced"):
                w = geometry.heldout_windows(model, ev, maps, cfg.context, cfg.batch_size, upstream, skip)
                for part in ("output", "update"):
                    frame[f"R² {part}, {upstream}"] = pd.Series(
                        {l: float(1 - w["sse"][l].sum() / w[f"sst {part}"][l].sum()) for l in w["sse"]}
                    )
                windows += [
                    {
                        "convention": conv,
                        "upstream": upstream,
                        "block": l,
                        "window sse": tuple(w["sse"][l].tolist()),
                        "window sst output": tuple(w["sst output"][l].tolist()),
                        "window sst update": tuple(w["sst update"][l].tolist()),
                    }
                    for l in sorted(w["sse"])
                ]
            frames[conv] = frame
        return {"frames": frames, "windows": pd.DataFrame(windows)}

    key = {"linearity": LINEARITY_VERSION, "tokens": cfg.linearity_tokens}
    return Linearity(**_cached("linearity", cfg, model, compute, **key))


def directions(model: HookedTransformer, cfg: VarianceConfig, fit: Fits) -> Directions:
    """Rogue dimensions and the overlap of variance, gradient and readout subspaces at every layer."""

    def compute():
        tok = tokens(model, cfg)
        L, d, k = model.cfg.n_layers, model.cfg.d_model, cfg.k_overlap
        grads = geometry.gradient_covariance(model, tok["direction"], list(range(L)), cfg.context, cfg.batch_size)
        readout = geometry.readout_basis(model)[0][:, :k]
        names = [f"blocks.{l}.hook_resid_pre" for l in range(L)]
        n = max(cfg.eval_tokens, cfg.cca_tokens)
        states = geometry.collect(model, held_out(model, n), names, cfg.context, cfg.batch_size, max_tokens=n)
        rows, units, grad_dirs = [], [], {}
        for l in progress(range(L), desc="overlap"):
            var = fit.pca[l].top(k).double()
            grad_dirs[l] = geometry.top_directions(grads[l], max(max(cfg.ks), k)).float()
            g = grad_dirs[l][:, :k].double()
            rnd = geometry.random_subspace(d, k, cfg.seed + l)
            units += _cca_units(states[names[l]], var, g, l, cfg)
            x = states[names[l]][: (cfg.eval_tokens // cfg.context) * cfg.context].double()
            rogue = geometry.rogue_dimensions(x)
            idx = rogue.rogue()
            cc = geometry.cca(x @ var, x @ g)
            rows.append(
                {
                    "layer": l,
                    "rogue dims": len(idx),
                    "top ratio": float(rogue.ratio.max()),
                    "rogue variance share": float(rogue.variance_share[idx].sum()) if len(idx) else 0.0,
                    "top-k variance share": fit.pca[l].retained(k),
                    "cos² variance-gradient": float(geometry.principal_angles(var, g).square().mean()),
                    "cos² variance-readout": float(geometry.principal_angles(var, readout).square().mean()),
                    "cos² gradient-readout": float(geometry.principal_angles(g, readout).square().mean()),
                    "cos² random": k / d,
                    "CCA mean": float(cc.mean()),
                    "CCA uncorrelated share": float((cc < cfg.uncorrelated_below).double().mean()),
                    "CCA random uncorrelated share": float(
                        (geometry.cca(x @ var, x @ rnd) < cfg.uncorrelated_below).double().mean()
                    ),
                }
            )
        return {
            "frame": pd.DataFrame(rows).set_index("layer"),
            "gradient": grad_dirs,
            "readout": readout,
            "windows": pd.DataFrame(units),
            "removal": _removal(model, cfg, fit, grad_dirs),
        }

    return Directions(**_cached("directions", cfg, model, compute, step=STEP_VERSIONS["directions"]))


def _cca_units(x: torch.Tensor, var: torch.Tensor, g: torch.Tensor, layer: int, cfg: VarianceConfig) -> list[dict]:
    """Per window of ``cfg.cca_tokens`` held-out tokens at one layer: the mean canonical correlation of
    the variance subspace with the gradient subspace and with a random subspace drawn for that window."""
    x = x[: (cfg.cca_tokens // cfg.context) * cfg.context]
    if len(x) == 0:
        return []
    grad = geometry.window_cca(x, var, g, cfg.context)
    d, k = var.shape
    out = []
    for w in range(len(grad)):
        rnd = geometry.random_subspace(d, k, cfg.seed + 100_000 + 1_000 * layer + w)
        chance = geometry.window_cca(x[w * cfg.context : (w + 1) * cfg.context], var, rnd, cfg.context)
        out.append({"layer": layer, "window": w, "CCA gradient": float(grad[w]), "CCA random": float(chance[0])})
    return out


def _removal(model: HookedTransformer, cfg: VarianceConfig, fit: Fits, grad_dirs: dict) -> pd.DataFrame:
    """Per-window loss on ``cfg.gap_tokens`` held-out tokens with the top ``cfg.k_overlap`` variance or
    gradient directions removed (mean ablation) at each ablation depth, and unablated."""
    ev, k = held_out(model, cfg.gap_tokens), cfg.k_overlap
    base = _score(model, ev, cfg, "removal base")
    rows = [_row(base, base, layer=-1, kind="none", k=0)]
    for l in depth_layers(model, cfg.ablation_layers):
        p = fit.pca[l]
        for kind, basis in (("variance", p.top(k)), ("gradient", grad_dirs[l][:, :k])):
            with geometry.ablated(model, l, basis.float(), p.mean.float()):
                rows.append(_row(base, _score(model, ev, cfg, f"remove {kind} k={k}"), layer=l, kind=kind, k=k))
    return pd.DataFrame(rows)


def _score(model, tok, cfg: VarianceConfig, desc: str) -> LMScore:
    return lm_score(model, tok, cfg.context, batch_size=cfg.batch_size, desc=desc)


def _row(base: LMScore, s: LMScore, **extra) -> dict:
    return {
        **extra,
        "nll": s.nll,
        "Δnll": s.nll - base.nll,
        "perplexity": s.perplexity,
        "window nll": s.window_nll,
        "window tokens": s.window_tokens,
    }


def ablation(model: HookedTransformer, cfg: VarianceConfig, fit: Fits, dirs: Directions) -> pd.DataFrame:
    """Loss with top-k directions of each kind projected out, and with only the top-r variance kept."""

    def compute():
        ev = tokens(model, cfg)["eval"][: cfg.ablation_tokens]  # the start of the held-out text
        base = _score(model, ev, cfg, "ablation base")
        d = model.cfg.d_model
        ks = sorted(set(k for k in cfg.ks if k < d) | {d})
        u_read, s_read = geometry.readout_basis(model)
        rows = [_row(base, base, layer=-1, kind="none", k=0)]
        for l in depth_layers(model, cfg.ablation_layers):
            p = fit.pca[l]
            g = dirs.gradient[l]
            bases = {
                "variance": lambda k: p.top(k),
                "gradient": lambda k: (
                    g[:, :k]
                    if k <= g.shape[1]
                    else geometry.orthonormal(torch.cat([g.double(), p.components.double()], 1))[:, :k]
                ),
                "readout": lambda k: u_read[:, :k],
                "random": lambda k: geometry.random_subspace(d, k, cfg.seed + 1000 * l + k),
            }
            for kind, make in bases.items():
                for k in ks:
                    with geometry.ablated(model, l, make(k).float(), p.mean.float()):
                        s = _score(model, ev, cfg, f"remove {kind} k={k}")
                    rows.append(_row(base, s, layer=l, kind=kind, k=k, retained=1 - p.retained(k)))
            for r in sorted(set(cfg.keep_ranks) | {d}):
                if r > d:
                    continue
                with geometry.ablated(model, l, p.top(r).float(), p.mean.float(), keep=True):
                    s = _score(model, ev, cfg, f"keep r={r}")
                rows.append(_row(base, s, layer=l, kind="keep variance", k=r, retained=p.retained(r)))
        return pd.DataFrame(rows)

    return _cached("ablation", cfg, model, compute)


def replacement(model: HookedTransformer, cfg: VarianceConfig, fit: Fits) -> pd.DataFrame:
    """Perplexity with the last k blocks replaced (rank maps at the seed's ratio, and full maps)."""

    def compute():
        ev = lm_tokens(model.tokenizer, "eval", n_tokens=cfg.replace_tokens)
        base = _score(model, ev, cfg, "replacement base")
        L = model.cfg.n_layers
        rows = [_row(base, base, blocks=0, map="none", compression=1.0, first=L)]
        for kind, fitted in (("ranked", fit.ranked), ("full", fit.full)):
            for k in cfg.multi_blocks:
                maps = [fitted[l] for l in range(L - k, L)]
                with linear_block.replaced(model, maps):
                    s = _score(model, ev, cfg, f"{kind} last {k}")
                ratio = sum(linear_block.block_params(model, m.layer) for m in maps) / sum(m.n_values for m in maps)
                label = f"rank {maps[0].rank}" if kind == "ranked" else "full d×d"
                rows.append(_row(base, s, blocks=k, map=label, compression=ratio, first=L - k))
        return pd.DataFrame(rows)

    return _cached("replacement", cfg, model, compute, tokens=cfg.replace_tokens)


def quantization(model: HookedTransformer, cfg: VarianceConfig) -> Quantization:
    """Perplexity per bits for direct, rotated and factor-then-quantize RTN, and amplification per weight."""

    def compute():
        ev = held_out(model, cfg.quant_tokens)
        base = _score(model, ev, cfg, "quantization base")
        rms = model.cfg.normalization_type in ("RMS", "RMSPre")  # rotation needs RMSNorm (see rotation)
        rotated = rotation.rotated_copy(model, cfg.seed) if rms else None
        factors: dict = {}
        layers = None if cfg.quant_layers is None else depth_layers(model, cfg.quant_layers)
        rows = [_row(base, base, scheme="none", bits=32, bpw=32.0)]
        schemes = [("direct", model, None), ("rotated", rotated, None), ("factor", model, 0)]
        for bits in cfg.quant_bits:
            for scheme, src, rank in [s for s in schemes if s[1] is not None]:
                m = copy.deepcopy(src)
                rep = rotation.quantize_blocks(m, bits, rank, factors, layers)
                rows.append(
                    _row(
                        base,
                        _score(m, ev, cfg, f"{scheme} {bits}b"),
                        scheme=scheme,
                        bits=bits,
                        bpw=rotation.bits_per_weight(rep),
                    )
                )
                del m
        del rotated
        params = dict(model.named_parameters())
        amp = []
        layers = None if cfg.amp_layers is None else depth_layers(model, cfg.amp_layers)
        for name in progress(rotation.block_weights(model, layers), desc="amplification"):
            w = to_linear(name, params[name].detach()).float()
            r = min((w.shape[0] * w.shape[1]) // sum(w.shape), *w.shape)
            ab = rotation.balanced_factors(w, r)
            for bits in cfg.quant_bits:
                amp.append(
                    {
                        "weight": name,
                        "layer": hooks.layer_of(name),
                        "bits": bits,
                        "rank": r,
                        **rotation.amplification(w, r, bits, ab),
                    }
                )
        return {"ppl": pd.DataFrame(rows), "amplification": pd.DataFrame(amp)}

    return Quantization(**_cached("quantization", cfg, model, compute, step=STEP_VERSIONS["quantization"]))


def exits(model: HookedTransformer, cfg: VarianceConfig, fit: Fits) -> Exits:
    """Lens statistics (logit and least-squares tuned lens) and early exit per threshold."""

    def compute():
        ev = held_out(model, cfg.exit_tokens)
        out, curves = {}, []
        for lens, tr in (("logit lens", None), ("tuned lens", fit.lens)):
            st = geometry.lens_stats(model, ev, cfg.context, max(1, cfg.batch_size // 2), tr, desc=lens)
            for r in geometry.exit_curve(st, cfg.thresholds):
                curves.append(
                    {
                        "lens": lens,
                        "threshold": r.threshold,
                        "easy share": r.easy_share,
                        "exit share": r.exit_share,
                        "compute saved": r.compute_saved,
                        "ΔPPL": r.delta_ppl,
                        "perplexity": math.exp(r.nll),
                    }
                )
            fixed = geometry.early_exit(st, cfg.exit_threshold)
            *lo_hi, n_windows = geometry.easy_share_ci(fixed, st, cfg.context - 1)  # lens_stats scores context - 1
            out[lens] = {
                "kl": st.kl_to_final.mean(1).numpy(),
                "exit layers": fixed.exit_layer.numpy(),
                "easy layers": fixed.easy_layer.numpy(),
                "easy": (fixed.easy_share, *lo_hi),
                "n": int(st.confidence.shape[1]),
                "windows": n_windows,
            }
        out["curve"] = pd.DataFrame(curves)
        return out

    return Exits.from_dict(_cached("exits", cfg, model, compute, step=STEP_VERSIONS["exits"]))
