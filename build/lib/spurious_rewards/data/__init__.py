"""Data: normalized records {id, prompt, answer, source} from hub ids, local files, the
contamination-free generator (:mod:`.synthetic`) and the one-shot example (:mod:`.loaders`)."""

from .loaders import *  # noqa: F403 - the loaders' public API is the package's
from .loaders import __all__  # noqa: F401
