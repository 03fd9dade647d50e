"""Where data files live: the shipped resources, and paths written in config files.

A config path is resolved in one of three ways, so a config file can be moved together with its
data and still point at the data shipped inside the package:

- ``pkg:SUB/PATH`` -> ``harmonia/resources/SUB/PATH`` (e.g. ``pkg:data/tofu/full.json``);
- an absolute path or one starting with ``~`` -> itself;
- any other relative path -> relative to the config file's folder (``base_dir``), or to the
  current directory when the config did not come from a file.

``${NAME}`` is replaced by an environment variable's value first. A relative path that the
variable puts at the start of the spec was written in the user's shell, so it is taken relative
to the current directory, not to the config file's folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PKG_PREFIX = "pkg:"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resources_dir() -> Path:
    """The ``harmonia/resources`` folder of the installed package."""
    return Path(__file__).resolve().parent.parent / "resources"


def resolve_path(spec: str | Path, base_dir: str | Path | None = None) -> Path:
    """Turn a config path (see module docstring) into a filesystem path."""
    text = str(spec)
    if text.startswith(PKG_PREFIX):
        return resources_dir() / text[len(PKG_PREFIX) :].lstrip("/")
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    return (Path(base_dir) if base_dir is not None else Path.cwd()) / path


def portable_path(path: str | Path) -> str:
    """``pkg:SUB/PATH`` for a path inside the package's resources, else the path itself.

    A config that names shipped data keys caches and is written to results in this form, so
    neither depends on where harmonia is installed (another clone finds the same cached results).
    """
    resolved = Path(path).resolve()
    root = resources_dir()
    if resolved == root or root in resolved.parents:
        return PKG_PREFIX + resolved.relative_to(root).as_posix()
    return str(path)


def unset_variables(spec: str | Path) -> list[str]:
    """The ``${NAME}`` variables in ``spec`` that the environment does not set (or sets empty)."""
    return [name for name in dict.fromkeys(_VARIABLE.findall(str(spec))) if not os.environ.get(name)]


def expand_variables(spec: str | Path) -> str:
    """``${NAME}`` -> the environment variable's value; data the package may not ship (the MUSE-Books
    text) is found this way without writing a machine's path into a shipped config. A variable that
    starts the spec with a relative path (``export HARMONIA_MUSE_BOOKS=../data/muse``) is made
    absolute against the current directory, where the user typed it."""

    def value(match: re.Match[str]) -> str:
        text = os.environ.get(match.group(1), match.group(0))
        return str(resolve_path(text, Path.cwd())) if match.start() == 0 else text

    return _VARIABLE.sub(value, str(spec))
