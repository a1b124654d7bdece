"""One package per seed study, each with the same files, as SAEBench gives each eval a folder:
``config.py`` (the config per run profile and ``config_for``), ``run.py`` (the experiment's steps,
cached, each returning a typed result), ``results.py`` (those results, frozen dataclasses a
chapter reads by attribute), ``verdicts.py`` (``verdicts(...)``: the seed's claims judged on them),
``plots.py`` (the study's own figures) and ``seed.py`` (the seed's own numbers, ``SEED_RESULTS``).

- :mod:`analysis.studies.tracing`: where facts live (ROME's causal tracing; seed 004's signal);
- :mod:`analysis.studies.sweep`: information-aware pruning and quantization (seed 004);
- :mod:`analysis.studies.factorization`: SVD, FWSVD, ASVD and SVD-LLM on the MLPs (seed 002);
- :mod:`analysis.studies.capability`: SAE capability density per head against Wanda (seed 001);
- :mod:`analysis.studies.adaptive`: AdaptiveCompress against sae-lens's SAEs (seed 000);
- :mod:`analysis.studies.variance`: variance against predictive directions, block linearity,
  rotation quantization and early exit (seed 003).

:mod:`analysis.studies.registry` finds them by key; :mod:`analysis.studies.verdicts` is the one
verdict machinery they share. Studies sit on top of the library: they import signals and
compression, never the reverse, and never each other.
"""
