"""harmonia: multi-objective unlearning for LLMs by bidirectional Top-K logit distillation.

Layout (data flows top to bottom):

- ``harmonia.data``: every source standardised into :class:`~harmonia.data.schema.QARecord`.
- ``harmonia.models``: model loading by spec string, chat formatting.
- ``harmonia.teacher``: the context-instructed teacher, its calibration and report.
- ``harmonia.methods``: one small class per unlearning method; each defines only its loss.
- ``harmonia.training``: the accelerate-based engine every method trains through.
- ``harmonia.evaluation`` / ``harmonia.attacks``: metrics and probing attacks.
- ``harmonia.reports``: results files, tables, plots and HTML reports.
- ``harmonia.cli``: the thin Typer command line.
"""

__version__ = "0.1.0"
