"""londinium: build a small GPT-style language model from scratch on your own corpus, and serve it.

The pipeline is sources -> corpus -> tokenizer -> shards -> train -> checkpoints -> eval, generate,
export, serve. Every stage is a library call; the `londinium` command is a thin layer over them.
"""

from londinium.config import Config, load_config
from londinium.errors import LondiniumError
from londinium.workspace import Workspace

__version__ = "0.1.0"

__all__ = ["Config", "LondiniumError", "Workspace", "load_config", "__version__"]
