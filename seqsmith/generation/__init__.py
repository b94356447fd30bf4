"""Search algorithms written once against the model interface: greedy, beam, diverse beam, sampling;
``sequences`` decodes and scores as tensors for training objectives; ``generator`` turns texts into texts,
with ``unknown`` replacing an output UNK from the source."""

from seqsmith.generation.ensemble import EnsembleModel
from seqsmith.generation.hypothesis import Hypothesis
from seqsmith.generation.search import generate_ids

__all__ = ["EnsembleModel", "Hypothesis", "generate_ids"]
