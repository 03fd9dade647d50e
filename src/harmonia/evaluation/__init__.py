"""Evaluation: pure metric functions (``metrics``) and the code that runs models to feed them.

- ``generation``: batched greedy generation; ``loglik``: teacher-forced log-probabilities;
- ``scoring`` (QA, MUSE KnowMem/VerbMem, probabilities), ``multiple_choice`` (option
  log-likelihood, lm-eval format), ``privacy`` (membership inference), ``lm_eval_backend``;
- ``config`` (``EvalConfig``), ``objectives`` (the four objectives), ``harness`` (``evaluate``),
  ``results`` (the ``results.json`` schema).

Nothing is imported here, so that ``harmonia.evaluation.metrics`` stays free of model code.
"""
