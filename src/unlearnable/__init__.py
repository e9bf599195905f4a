"""unlearnable: protect images from unauthorised training, audit the protection, make trained models forget."""

from __future__ import annotations

__version__ = "0.1.0"
