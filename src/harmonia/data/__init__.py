"""The unified question-answer data layer (METHOD.md Part 1).

Every source becomes :class:`~harmonia.data.schema.QARecord` rows, one module per job:

- ``loaders``: one loader per source (TOFU, MUSE-Books, WMDP, MMLU, TruthfulQA, generic
  JSON/JSONL/CSV/text); errors name file, record and field.
- ``standardise``: MCQ -> QA, raw text -> QA (offline "continue the passage", or a generator LLM
  through ``generators``: local model or OpenAI-compatible endpoint).
- ``anchors``: contrastive forget/neighbour pairs; ``prefill``: prefill-augmented records.
- ``jsonl``: validated reading and atomic writing of record files.
- ``config`` + ``build``: a ``DataConfig`` (YAML) built into one dataset; ``summary`` inspects it.
- ``paths``: ``pkg:`` paths into the shipped data in ``harmonia/resources/data``.
"""
