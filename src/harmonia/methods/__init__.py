"""Unlearning methods: one small class per method, each defining only its loss (see ``losses``)."""

# Importing a method module registers it (see ``base.register_method``).
from harmonia.methods import sft  # noqa: E402, F401
from harmonia.methods import ga  # noqa: F401
from harmonia.methods import graddiff  # noqa: F401
from harmonia.methods import npo  # noqa: F401
from harmonia.methods import simnpo  # noqa: F401
from harmonia.methods import rmu  # noqa: F401
from harmonia.methods import refusal_sft  # noqa: F401
from harmonia.methods import idkdpo  # noqa: F401
from harmonia.methods import distill  # noqa: F401
