"""Unlearning methods: one small class per method, each defining only its loss (see ``losses``)."""

# Importing a method module registers it (see ``base.register_method``).
from harmonia.methods import (
    distill,  # noqa: F401
    ga,  # noqa: F401
    graddiff,  # noqa: F401
    idkdpo,  # noqa: F401
    npo,  # noqa: F401
    refusal_sft,  # noqa: F401
    rmu,  # noqa: F401
    sft,  # noqa: F401
    simnpo,  # noqa: F401
)
