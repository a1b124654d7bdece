"""Compression Atlas: where information lives inside transformer language models, and how
that map guides their compression.

The package is layered, each layer importing only those below it: the foundation (``config``,
``cache``, ``progress``, ``models``, ``components``, ``hooks``, ``forward``, ``evaluate``,
``stats``, ``memory``), ``data``, the signals (``tracing``, ``sae``, ``probing``, ``scores``,
``wanda``, ``geometry``), ``compress``, the ``studies`` (one package per seed, found through
``studies.registry``), and what chapters call to show results (``plots``, ``book``).
"""

import warnings

with warnings.catch_warnings():
    # huggingface_hub (under transformers and TransformerLens) imports tqdm.auto, which warns
    # "IProgress not found" into every executed page when ipywidgets is missing: load it once, quietly
    warnings.simplefilter("ignore")
    import tqdm.auto  # noqa: F401

__version__ = "0.1.0"
