"""The context-instructed teacher (METHOD.md Part 2): the same frozen model with an intent instruction.

- ``config``: :class:`~harmonia.teacher.config.TeacherConfig` (mode, scope, roles, report, calibration);
- ``instruction``: instruction templates (``resources/teacher/*.yaml``) filled from a scope;
- ``context``: how the teacher sees a record (system turn, few-shot, amplification);
- ``decoding``: the teacher's greedy response ids (amplified when asked);
- ``targets``: distilled positions, teacher responses and the on-disk Top-K cache;
- ``report``: the teacher report and its separation check;
- ``calibration``: instruction-following calibration on disjoint entities.

Submodules are imported explicitly (``from harmonia.teacher.context import ...``): some depend on
``harmonia.methods``, which itself uses this package.
"""
