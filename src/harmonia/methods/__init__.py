"""Unlearning methods: one small class per method, each defining only its loss (see ``losses``)."""

# Importing a method module registers it (see ``base.register_method``).
from harmonia.methods import sft  # noqa: E402, F401
