"""Open a subjects source (built-in phantoms, an MRBrainS18-layout folder, a CSV of NIfTI paths) as a
:class:`SubjectSet`. The type and its helpers live in ``subjectset.py`` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UserError
from .subjectset import (  # noqa: F401  (the names every caller imports from here)
    LABEL_SCHEMES,
    MODALITY_ALIASES,
    MRBRAINS_CLASSES,
    MRBRAINS_SCORED,
    PER_SUBJECT_META,
    PHANTOM_CLASSES,
    SubjectSet,
    canonical_modality,
    normalise_intensity,
    numbered_scheme,
    parse_modalities,
    parse_shape,
    resample,
    split_by_id,
    volume_sha256,
)


def load_subjects(source: str, shape: Sequence[int] | None = None,
                  modalities: Sequence[str] | None = None, pad: bool = False) -> SubjectSet:
    """Open ``brain-phantoms[:opts]``, an MRBrainS18-layout folder, or a CSV of NIfTI paths.

    ``modalities`` picks channels by name, in the order given (None: all the source has). Subjects of different
    shapes need ``shape`` (resampled to it) or ``pad`` (zero-padded to the largest; ``SubjectSet.native`` gives each
    subject back at its own shape).
    """
    from pathlib import Path

    if source.split(":", 1)[0] == "brain-phantoms":
        from .phantoms import PHANTOM_MODALITIES, brain_phantoms, parse_spec

        opts = parse_spec(source)
        if modalities is not None and "channels=" not in source:  # build as many channels as the names need
            from ..registry import look_up_option

            want = [look_up_option(m, PHANTOM_MODALITIES, "brain-phantoms modality") for m in modalities]
            opts["channels"] = max(PHANTOM_MODALITIES.index(m) for m in want) + 1
        s = brain_phantoms(**opts)
        if shape is not None and tuple(shape) != s.shape:
            raise UserError("brain-phantoms: set the size with 'brain-phantoms:size=N' instead of --shape")
        return s.pick(modalities)
    from .formats import FORMATS

    p = Path(source)
    for name in volume_formats():  # the registered 3D sources: a CSV of NIfTI paths, an MRBrainS18 folder
        fmt = FORMATS.get(name)
        if fmt.detect(p):
            return fmt.read_subjects(p, shape, modalities, pad=pad)
    raise UserError(f"{source}: not 'brain-phantoms', a folder in the MRBrainS18 layout, or a .csv of NIfTI paths")


def volume_formats() -> list[str]:
    """Names of the registered 3D subject formats (their ``detect`` rules exclude each other: a folder, a .csv)."""
    from .formats import FORMATS

    return [n for n in FORMATS.names() if getattr(FORMATS.get(n), "dims", 2) == 3]
