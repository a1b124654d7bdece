"""One module per seed study: its per-profile config, experiment runner, the seed's own numbers
(``SEED_RESULTS``) and the verdict functions that turn our measurements into a verdict.

- :mod:`analysis.studies.tracing`: where facts live (ROME's causal tracing; seed 004's signal);
- :mod:`analysis.studies.sweep`: information-aware pruning and quantization (seed 004);
- :mod:`analysis.studies.factorization`: SVD, FWSVD, ASVD and SVD-LLM on the MLPs (seed 002);
- :mod:`analysis.studies.capability`: SAE capability density per head against Wanda (seed 001);
- :mod:`analysis.studies.memory_plans`: what each study holds at once on a model (printed under ``gpu``).

Studies sit on top of the library: they import signals and compression, never the reverse.
"""
