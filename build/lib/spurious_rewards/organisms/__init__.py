"""CPU model organisms: build (:mod:`.build`) and probe (:mod:`.probe`) tiny models with the paper's priors."""

from .build import FAMILIES, build_organism, resolve_config, train_tokenizer
from .probe import probe_organism

__all__ = ["FAMILIES", "build_organism", "probe_organism", "resolve_config", "train_tokenizer"]
