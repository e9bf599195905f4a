"""The protection framework: a registry of methods and the fit/apply split.

``fit`` draws or learns a perturbation from a key (everything random happens there); ``apply`` is pure and
deterministic (torchio's ``RandomNoise`` -> ``Noise`` split). Same key + same data => the same bytes out.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from ..data.imageset import ImageSet, check_classes_nonempty
from ..errors import UserError
from ..params import coerce as _coerce  # old private name, kept for code that imports it from here
from ..registry import Registry, did_you_mean
from ..runtime import distributed as D
from ..runtime.precision import Accel
from .keys import Key

METHODS: Registry[type[Protection]] = Registry("method")


class Protection:
    """Base class of a protection method. Subclasses define ``Params``, ``fit`` and ``apply``."""

    name: ClassVar[str] = "base"
    #: True if ``fit`` never looks at labels (Unlearnable Clusters); class-wise methods set it False.
    label_agnostic: ClassVar[bool] = False
    #: One-line description shown by ``unlearnable datasets``/``methods`` and the docs.
    summary: ClassVar[str] = ""
    #: Largest L-inf ``eps`` the method accepts (and ``--target-acc`` searches up to); beyond it images visibly change.
    max_eps: ClassVar[float] = 32 / 255
    #: True if ``apply`` works on images of any size as they are (convolution-style methods such as CUDA). False:
    #: ``apply`` only knows the size it was fitted at, and a streamed protect job applies it there and resizes the
    #: resulting perturbation to each image's native size (see ``protect/native.py`` and docs/architecture.md).
    size_free: ClassVar[bool] = False
    #: False if ``fit`` reads only shapes, ids and labels, never pixels: a protect job then fits on a view that
    #: holds no pixels at all, so fitting costs no memory however large the data.
    fit_reads_pixels: ClassVar[bool] = True

    @dataclasses.dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, params: Params | None = None, device: str = "cpu", progress: bool = False,
                 accel: Accel | None = None, **overrides: Any):
        self.params = params if params is not None else make_params(type(self), overrides)
        self.device = device
        self.progress = progress
        self.accel = (accel or Accel()).validate()  # precision/compile/sync-bn of the methods that train

    # -- the two halves ----------------------------------------------------------------------------------------
    def fit(self, data: ImageSet, key: Key) -> Any:
        """Sample or learn the perturbation for ``data`` (the samples to be protected)."""
        raise NotImplementedError

    def apply(self, data: ImageSet, perturbation: Any) -> torch.Tensor:
        """Return protected uint8 images ``(N, C, H, W)`` for ``data``; pure and deterministic."""
        raise NotImplementedError

    # -- models it trains --------------------------------------------------------------------------------------
    def models_trained(self) -> set[str]:
        """The registered architectures ``fit`` trains as surrogates (a verification victim must be none of them):
        the ``surrogate``, ``arch`` or ``model`` parameter, where the method has one."""
        return {str(getattr(self.params, f)) for f in ("surrogate", "arch", "model") if hasattr(self.params, f)}

    # -- budget ------------------------------------------------------------------------------------------------
    def linf_budget(self) -> float | None:
        """The L-infinity bound in [0, 1] units that ``apply`` guarantees after quantisation, if any."""
        eps = getattr(self.params, "eps", None)
        norm = getattr(self.params, "norm", "linf")
        return float(eps) if eps is not None and norm == "linf" else None


# ---------------------------------------------------------------------------------------------------------------
def make_params(cls: type[Protection], overrides: Mapping[str, Any]) -> Any:
    """Build ``cls.Params`` from strings or numbers, with type coercion and "did you mean" for unknown names."""
    fields = {f.name: f for f in dataclasses.fields(cls.Params)}
    hints = typing.get_type_hints(cls.Params)
    values: dict[str, Any] = {}
    for k, v in overrides.items():
        k2 = k.replace("-", "_")
        if k2 not in fields:
            raise UserError(f"--param {k}: method '{cls.name}' has no parameter '{k}'{did_you_mean(k2, fields)}; "
                            f"parameters: {', '.join(fields) or 'none'}")
        values[k2] = _coerce(v, hints[k2], f"--param {k}")
    try:
        params = cls.Params(**values)
    except (TypeError, ValueError) as e:
        raise UserError(f"method '{cls.name}': {e}") from None
    check = getattr(params, "validate", None)
    if check is not None:
        check()
    eps = getattr(params, "eps", None)
    if eps is not None and getattr(params, "norm", "linf") == "linf" and eps > cls.max_eps + 1e-9:
        raise UserError(f"--param eps={eps * 255:.4g}/255: above the maximum of method '{cls.name}' "
                        f"({cls.max_eps * 255:.4g}/255)")
    return params


def eps_levels(eps: float) -> int:
    """Largest uint8 step count that stays within ``eps`` ([0, 1] units) after quantisation."""
    return int(math.floor(eps * 255.0 + 1e-6))


def add_within_linf(images: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Add a float perturbation (``[0, 1]`` units) to uint8 images so that ``|out - in| <= eps`` holds in uint8.

    The perturbation is rounded to whole grey levels and clipped to ``floor(255 * eps)`` levels, then the image
    is clipped to [0, 255]; clipping can only shrink the change, so the bound survives quantisation exactly.
    """
    k = eps_levels(eps)
    steps = delta.mul(255.0).round().clamp_(-k, k).to(torch.int16)
    return (images.to(torch.int16) + steps).clamp_(0, 255).to(torch.uint8)


def require_labels(method: str, data: ImageSet) -> None:
    if data.num_classes < 2:
        raise UserError(f"method '{method}' needs at least 2 classes, found {data.num_classes}")


def require_fitted(data: ImageSet, num_classes: int, channels: int, what: str) -> None:
    """``data`` must hold only classes and a channel count that the class-wise perturbation ``what`` was fitted for."""
    if len(data) and (int(data.labels.max()) >= num_classes or data.channels != channels):
        raise UserError(f"labels/channels: the {what} were fitted for {num_classes} classes and {channels} "
                        f"channel(s)")


def select(data: ImageSet, algo: Protection, splits: str | Sequence[str]) -> torch.Tensor:
    """Indices of the samples to protect; checks the splits exist and (for label-using methods) every class has
    samples there."""
    want = data.split_names() if splits in ("all", ("all",), ["all"]) else (
        [splits] if isinstance(splits, str) else list(splits))
    for s in want:
        if s not in data.split_names():
            raise UserError(f"--splits: split '{s}' not in the data (present: {', '.join(data.split_names())})")
    idx = data.indices(want)
    if not algo.label_agnostic:
        require_labels(algo.name, data)
        if want == ["train"]:
            check_classes_nonempty(data, "train")
    return idx


def apply_sharded(algo: Protection, data: ImageSet, perturbation: Any) -> torch.Tensor:
    """``algo.apply(data, perturbation)``; under torchrun each rank applies it to its strided share of the samples
    and the shares are gathered (copied, never summed). ``apply`` is pure per sample (the streamed pass already
    applies chunk by chunk), so the bytes equal one process's. Every rank must call it, as with any collective."""
    w = D.world_size()
    if w == 1 or len(data) < w:
        return algo.apply(data, perturbation)
    mine = list(D.shard_indices(len(data)))
    return D.gather_shards(algo.apply(data.subset(mine), perturbation), len(data))


def protect(
    data: ImageSet,
    method: str | Protection,
    key: Key | bytes | int | None = None,
    splits: str | Sequence[str] = "train",
    device: str = "cpu",
    progress: bool = False,
    return_perturbation: bool = False,
    accel: Accel | None = None,
    **params: Any,
) -> ImageSet | tuple[ImageSet, Any]:
    """Protect the samples of ``splits`` (``"all"`` for every split) and return a new ImageSet.

    ``data`` is never modified. ``key`` may be a :class:`Key`, raw bytes or an int (a public, reproducible key for
    experiments). Extra keyword arguments are the method's parameters, e.g. ``blur=0.3``.
    """
    algo = method if isinstance(method, Protection) else METHODS.get(method)(device=device, progress=progress,
                                                                             accel=accel, **params)
    k = Key.coerce(key)
    idx = select(data, algo, splits)
    target = data.subset(idx)
    pert = algo.fit(target, k)
    out = apply_sharded(algo, target, pert)
    if out.shape != target.images.shape or out.dtype != torch.uint8:
        raise RuntimeError(f"method {algo.name} returned {out.dtype} {tuple(out.shape)}")
    result = data.with_images(out, idx)
    return (result, pert) if return_perturbation else result
