"""What the causal tracing chapter reads from the study, as frozen values read by attribute.

The traces themselves are already typed (:class:`analysis.tracing.TraceResult`,
:class:`analysis.tracing.AIEResult`); this holds the study's own results around them.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True, eq=False)
class Agreement:
    """How two methods' indirect effects agree on the same facts and states
    (:func:`~analysis.studies.tracing.agreement`): their correlations over the paired states."""

    pearson: float
    spearman: float
    n: int
    """States compared (those from the subject on, traced by both, neither NaN)."""
    x: Float[Tensor, " state"]
    """The first method's indirect effects."""
    y: Float[Tensor, " state"]
    """The second method's indirect effects, paired with :attr:`x`."""
