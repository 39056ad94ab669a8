"""SAEs: one `Sae` module whatever the release format (module.py), a reader per format (formats/), and
detection plus loading in one place (load.py).

Shapes: D = d_in (the model's hidden size), F = d_sae (features), K = k, B = any leading dims.
"""

from qscope.sae.formats.common import SaeFormatError, SaeSpec
from qscope.sae.formats.qwen_scope import save as save_qwen_scope
from qscope.sae.load import find_sae_files, load_sae
from qscope.sae.module import Sae

__all__ = ["Sae", "SaeFormatError", "SaeSpec", "find_sae_files", "load_sae", "save_qwen_scope"]
