"""Pure evaluation metrics: strings and numbers in, :class:`MetricResult` or a number out.

Importing this package registers every metric, so ``get_metric(name)`` finds them all:
ROUGE-L (``rouge``), refusal and over-refusal (``refusal``), multiple-choice prompts and
accuracy (``mcq``), answer probability and truth ratio (``probability``), membership inference
and PrivLeak (``mia``), n-gram entropy and perplexity (``fluency``), and the combined
four-objective score (``combined``).
"""

from harmonia.evaluation.metrics import combined, fluency, mcq, mia, probability, refusal, rouge
from harmonia.evaluation.metrics.base import MetricResult, get_metric, list_metrics, register_metric

__all__ = [
    "MetricResult",
    "combined",
    "fluency",
    "get_metric",
    "list_metrics",
    "mcq",
    "mia",
    "probability",
    "refusal",
    "register_metric",
    "rouge",
]
