"""One small loader per data source; each returns QARecords (or documents, for raw text).

Record loaders fill ``source`` and ``group`` and take the ``role`` from the caller; they raise
:class:`~harmonia.errors.DataError` naming file, record and field on malformed input.
"""

from harmonia.data.loaders.generic import load_generic, load_text
from harmonia.data.loaders.mmlu import load_mmlu
from harmonia.data.loaders.muse import load_muse_knowmem, load_muse_privleak, load_muse_raw, load_muse_verbmem
from harmonia.data.loaders.tofu import TofuAuthor, author_name, load_tofu, load_tofu_idk, tofu_authors
from harmonia.data.loaders.truthfulqa import load_truthfulqa
from harmonia.data.loaders.wmdp import load_wmdp

__all__ = [
    "TofuAuthor",
    "author_name",
    "load_generic",
    "load_mmlu",
    "load_muse_knowmem",
    "load_muse_privleak",
    "load_muse_raw",
    "load_muse_verbmem",
    "load_text",
    "load_tofu",
    "load_tofu_idk",
    "load_truthfulqa",
    "load_wmdp",
    "tofu_authors",
]
