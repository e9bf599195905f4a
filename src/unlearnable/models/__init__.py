"""Models: classifiers (victims and surrogates)."""

from .classifiers import MODELS, Classifier, build_model

__all__ = ["MODELS", "Classifier", "build_model"]
