"""Probing: what a layer's hidden states make linearly (or almost linearly) readable.

A *probe* (Belinkov 2021) is a small classifier trained on a model's frozen hidden states to
predict a property of the input: is this sentence grammatical, is this review positive, is
this answer true. High probe accuracy at a layer says the property can be read off that
layer. It does not say the model *uses* it, and a powerful probe can score well by memorising
the training data. Hewitt & Liang (2019) therefore pair every probe with a *control task*: the
same probe, trained on labels that are assigned at random to each *type* of input (drawn from
the task's label distribution), so that they carry no information about the property except
what memorising the type provides. *Selectivity* = task accuracy - control accuracy: a good
probe reads the property, not the vocabulary.

A control only measures memorisation if its types *recur*: Hewitt & Liang's word types are seen
in training and again at test. For sentence-level tasks the obvious type, a sentence's last
word, is mostly unseen at test (in the earlier subject-verb agreement task, about 7 % of test rows
had a last word seen in training), so a control probe can only guess, control accuracy sits at chance and
selectivity is inflated. The default type here is therefore the sentence's *last frequent word*
(the last of its words that is among the ``control_vocab`` most frequent word types of the task's
texts), whose types recur across splits by construction; :func:`type_coverage` reports the share
of test rows whose type occurs in training (:attr:`ProbeResult.coverage`).

Here a probe is linear (logistic regression) or a 2-layer MLP (one hidden ReLU layer, as the
factorization seed uses), trained on standardised features with Adam, full batch. Every layer's
probe (and its control twin) trains at once as one batched model, which is what makes a probe
sweep over compressed models cheap. Splits are 80/20 *by group* (the two sentences of a minimal
pair, the true and false answer to one question, never straddle train and test), repeated over
seeds; results are mean +- standard deviation over seeds. With ``ProbeConfig.folds = k`` the
splits are instead the ``k`` folds of one group-wise partition (:func:`group_folds`), so every row
is tested exactly once; :attr:`ProbeResult.hits` keeps each row's held-out correctness, which is
what a paired test between two models' probes needs.

Features: for an encoder (BERT, MiniLM), the mean over real (non-padding) tokens of each
layer's output ``blocks.{l}.hook_normalized_resid_post``; for a decoder, each layer's
``blocks.{l}.hook_resid_post`` at the last token (the only one that has seen the whole text).
Both are :func:`analysis.hooks.feature_hook`.

This is the library's one probe trainer. :func:`train_probes` fits a batch of independent
probes (Adam, full batch; or L-BFGS for an L2-regularised logistic regression), and
:func:`fit_probe` is the one-probe entry point: features ``[n, d]``, labels ``[n]``, a train
and a test split in, held-out accuracy out.
"""

from analysis.probing.probes import (
    PROBE_KINDS,
    ProbeConfig,
    ProbeResult,
    Probes,
    fit_probe,
    hidden_states,
    probe_dataset,
    probe_layers,
    train_probes,
)
from analysis.probing.tasks import (
    MMLU_ANSWER_LABELS,
    MMLU_ANSWER_MAX_CHARS,
    PROBE_TASKS,
    control_labels,
    frequent_words,
    group_folds,
    group_split,
    load_probe_task,
    mmlu_answer_task,
    text_types,
    type_coverage,
    word_type,
)

__all__ = [
    "MMLU_ANSWER_LABELS",
    "MMLU_ANSWER_MAX_CHARS",
    "PROBE_KINDS",
    "PROBE_TASKS",
    "ProbeConfig",
    "ProbeResult",
    "Probes",
    "control_labels",
    "fit_probe",
    "frequent_words",
    "group_folds",
    "group_split",
    "hidden_states",
    "load_probe_task",
    "mmlu_answer_task",
    "probe_dataset",
    "probe_layers",
    "text_types",
    "train_probes",
    "type_coverage",
    "word_type",
]
