"""UC: Unlearnable Clusters (Zhang et al., "Unlearnable Clusters: Towards Label-agnostic Unlearnable Examples",
CVPR 2023), trained data-parallel as in Zhu et al., "Scale-up Unlearnable Examples Learning with High-Performance
Computing" (2025).

Label-agnostic: labels are never read. (1) A frozen surrogate (local weights, or SimCLR on the data itself) embeds
every image; (2) seeded K-means groups the embeddings into K clusters; (3) one generator turns K fixed noise codes
into K bounded perturbations, trained so that every cluster's perturbed features move to ANOTHER cluster's centre
(KL between the softmax of the features and of the target centre, UC Eq. 4). The clusters' "uniformity" is kept
and their "discrepancy" broken, so a victim learns the cluster-wise shortcut instead of the content.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..data.imageset import ImageSet, levels_to_uint8
from ..errors import UserError
from ..log import log
from ..models import MODELS
from ..models.classifiers import Classifier
from ..models.generators import NoiseGenerator
from ..registry import look_up_option
from ..runtime import checkpoint as CK
from ..runtime import distributed as D
from ..runtime import precision as P
from ..runtime.loop import EpochLoop
from ..runtime.schedule import lr_at, scaled_lr, scaling_note
from .base import METHODS, Protection, add_within_linf
from .keys import Key
from .kmeans import kmeans
from .ssl import PROJ_DIM, _bar, load_surrogate_weights, surrogate_spec, train_ssl_surrogate
from .tiles import phases, tile_at_phases


@dataclass(frozen=True)
class ClusterPerturbation:
    """K perturbations ``(K, C, H, W)`` in [0, 1] units, one cluster id per fitted sample id, and the fit report.

    ``centers`` ``(K, D)``, ``mu``/``sd`` ``(D,)`` (feature standardisation) and ``surrogate`` (see
    :func:`~unlearnable.protect.ssl.surrogate_spec`) let a new image be assigned to its nearest centre later.
    With ``shape=periodic``, ``tiles`` ``(K, C, p, p)`` are the learnt tiles and ``phase_seed`` draws each sample's
    phase from its id (``deltas`` then shows every tile at phase 0).
    """

    deltas: torch.Tensor
    assign: torch.Tensor  # (N,) int64
    ids: tuple[str, ...]
    report: dict[str, Any] = field(default_factory=dict)
    centers: torch.Tensor | None = None
    mu: torch.Tensor | None = None
    sd: torch.Tensor | None = None
    surrogate: dict[str, Any] | None = None
    tiles: torch.Tensor | None = None
    phase_seed: int | None = None

    def save_artifacts(self, folder: Path) -> list[Path]:
        """Write ``clusters.csv`` (sample id -> cluster id) into ``folder``."""
        path = folder / "clusters.csv"
        path.write_text("id,cluster\n" + "".join(f"{i},{int(c)}\n" for i, c in zip(self.ids, self.assign)))
        return [path]


@METHODS.register("uc")
class UnlearnableClusters(Protection):
    """UC: cluster-wise generator perturbations from a frozen surrogate and K-means (label-agnostic)."""

    summary = "Unlearnable Clusters: K-means on surrogate features + one generator, K cluster-wise perturbations " \
              "(Zhang et al., CVPR 2023); label-agnostic, DDP"
    max_eps = 64 / 255  # the batch-size study's CPU configuration runs at 64/255
    label_agnostic = True
    #: Parameters that make ``fit`` take about a second on tiny inputs (for contract tests).
    tiny_params: ClassVar[dict[str, Any]] = {"clusters": 2, "epochs": 1, "ssl_epochs": 1, "batch_size": 8,
                                             "surrogate_batch_size": 8, "gen_width": 8, "width": 8}
    test_params = tiny_params  # the name tests/protect/test_contract.py looks for

    @dataclass(frozen=True)
    class Params:
        eps: float = 16 / 255  # budget in [0, 1] units (UC uses 16/255 L-inf)
        norm: str = "linf"  # linf | l2
        clusters: int = 10  # K
        surrogate: str = "smallcnn"  # any registered architecture
        surrogate_weights: str = ""  # local file; empty => SimCLR on the data itself
        ssl_epochs: int = 15  # SimCLR epochs when no weights are given
        surrogate_batch_size: int = 256  # global batch of the SimCLR surrogate
        surrogate_lr: float = 1e-3
        width: int = 32  # width of the smallcnn surrogate (ignored by other architectures)
        epochs: int = 10  # generator epochs (one pass over the data each, all clusters at once)
        batch_size: int = 128  # GLOBAL batch of the generator training (the studied batch size)
        lr: float = 1e-3  # Adam learning rate at base_batch samples per step
        base_batch: int = 128
        lr_scaling: str = "none"  # none | linear | sqrt
        warmup_epochs: float = 0.0
        temperature: float = 1.0  # softmax temperature of the KL objective
        gen_width: int = 32
        gen_blocks: int = 2
        gen_scale: int = 4  # noise codes are (H/scale, W/scale), upsampled: smooth perturbations (see docs)
        kmeans_iters: int = 100
        # K-means starts, the lowest inertia kept (label-free). Purer clusters protect more (docs/study.md), and on
        # the benchmark sets inertia tracks purity: one start left some keys with clusters that merge two classes.
        kmeans_restarts: int = 10
        # periodic: one (p, p) tile per cluster repeated over the image at a per-sample phase, which survives a
        # victim's random crops (measured in docs/methods.md); smooth: one (H, W) perturbation per cluster (before)
        shape: str = "periodic"
        period: int = 0  # tile side for shape=periodic; 0 = auto: 2 for colour images, 4 for grey ones

        def validate(self) -> None:
            look_up_option(self.norm, ("linf", "l2"), "--param norm")
            look_up_option(self.surrogate, MODELS.names(), "--surrogate")
            look_up_option(self.lr_scaling, ("none", "linear", "sqrt"), "--lr-scaling")
            look_up_option(self.shape, ("smooth", "periodic"), "--param shape")
            if self.period != 0 and not 2 <= self.period <= 16:
                raise UserError(f"--param period={self.period}: must be 0 (auto) or in 2..16 pixels")
            if self.shape == "periodic" and self.norm != "linf":
                raise UserError(f"--param norm={self.norm}: shape=periodic needs norm=linf (a tile's L2 norm grows "
                                f"with the image)")
            if not 0 < self.eps <= (1 if self.norm == "linf" else 1e6):
                raise UserError(f"--eps {self.eps}: must be positive (and at most 1 for linf), e.g. 16/255")
            if self.surrogate_weights and not Path(self.surrogate_weights).is_file():
                raise UserError(f"--surrogate-weights {self.surrogate_weights}: no such file")
            if self.clusters < 2:
                raise UserError(f"--clusters {self.clusters}: UC needs at least 2 clusters")
            for name in ("epochs", "batch_size", "surrogate_batch_size", "gen_width", "width", "kmeans_iters",
                         "kmeans_restarts", "gen_scale"):
                if getattr(self, name) < 1:
                    raise UserError(f"--param {name}={getattr(self, name)}: must be at least 1")
            if self.ssl_epochs < 0 or self.lr <= 0 or self.surrogate_lr <= 0 or self.temperature <= 0:
                raise UserError("--param ssl_epochs must be >= 0 and lr, surrogate_lr, temperature positive")

    #: Folder for per-epoch checkpoints (set by ``protect_source``); ``None`` disables checkpointing.
    checkpoint_dir: Path | None = None
    #: Called as ``hook(stage, epoch)`` after each epoch's checkpoint of the ``"surrogate"`` (SimCLR) and
    #: ``"generator"`` stages (tests use it to simulate an interruption).
    on_epoch_end: Any = None

    def _stage_hook(self, stage: str) -> Callable[[int], None] | None:
        """``on_epoch_end`` bound to one stage, for :class:`~unlearnable.runtime.loop.EpochLoop`'s hooks."""
        hook = self.on_epoch_end
        return None if hook is None else (lambda epoch: hook(stage, epoch))

    # ------------------------------------------------------------------ fit
    def fit(self, data: ImageSet, key: Key) -> ClusterPerturbation:
        p = self.params
        if len(data) < p.clusters:
            raise UserError(f"--clusters {p.clusters}: more clusters than images ({len(data)})")
        D.per_rank_batch(p.batch_size)
        ck = self._checkpoints(data, key)
        surrogate, sur_report, spec = self._surrogate(data, key, ck)
        raw = self._features(surrogate, data.images)  # (N, D), identical on every rank
        # Standardise each feature dimension so that the softmax of UC's KL objective is neither flat nor
        # saturated whatever the surrogate's feature scale (raw pooled ReLU features give a near-uniform softmax).
        mu, sd = raw.mean(0), raw.std(0).clamp_min(1e-6)
        feats = (raw - mu) / sd
        km_path = ck / "kmeans.pt" if ck else None
        km_state = CK.load(km_path) if km_path is not None else None
        if km_state is not None:
            centers, assign, inertia = km_state["centers"], km_state["assign"], km_state["inertia"]
        else:
            km = kmeans(feats.to(self.device), p.clusters, key.generator("uc/kmeans"), iters=p.kmeans_iters,
                        restarts=p.kmeans_restarts)
            centers, assign, inertia = km.centers.cpu(), km.assign.cpu(), km.inertia
            log(f"uc: K-means kept the best of {p.kmeans_restarts} start(s): inertia {inertia:.4g} "
                f"(worst {max(km.inertias):.4g})")
            if km_path is not None and D.is_main():
                CK.save(km_path, {"centers": centers, "assign": assign, "inertia": inertia})
        sizes = torch.bincount(assign, minlength=p.clusters).tolist()
        log(f"uc: K-means on {feats.shape[1]}-d surrogate features: {p.clusters} clusters, sizes {sizes}")
        phase = phases(key.seed("uc/phases"), data.ids, self.period_for(data.channels)) if self.periodic else None
        gen, history = self._train_generator(data.images, assign, centers, _Standardised(surrogate, mu, sd), key, ck,
                                             phase)
        with torch.no_grad():
            out = gen().detach().cpu()  # (K, C, H, W), or (K, C, p, p) tiles
        tiles = out if self.periodic else None
        deltas = tile_at_phases(out, torch.zeros(len(out), 2, dtype=torch.long), data.size) if self.periodic else out
        # labels are read here only to report how well clusters match classes (never used by the fit)
        report = {"surrogate": sur_report, "kmeans": {"inertia": inertia, "cluster_sizes": sizes,
                                                     "restarts": p.kmeans_restarts},
                  "cluster_purity": cluster_purity(assign, data.labels), "shape": p.shape,
                  "period": int(tiles.shape[-1]) if tiles is not None else None,
                  "targets": _target_clusters(p.clusters, key).tolist(), "generator": history}
        return ClusterPerturbation(deltas, assign, tuple(data.ids), report, centers, mu, sd, spec, tiles,
                                   key.seed("uc/phases") if self.periodic else None)

    @property
    def periodic(self) -> bool:
        return self.params.shape == "periodic"

    def period_for(self, channels: int) -> int:
        """The tile side: the parameter, or 2 for colour and 4 for grey images (the `tiles` method's measured best)."""
        return self.params.period or (2 if channels == 3 else 4)

    def _checkpoints(self, data: ImageSet, key: Key) -> Path | None:
        """The checkpoint folder, tied to (params, key, data): a different run never resumes from it."""
        if self.checkpoint_dir is None:
            return None
        tag = CK.fingerprint([asdict(self.params), key.seed("uc/checkpoint")], data.images)  # no labels: UC reads none
        d = Path(self.checkpoint_dir) / f"uc-{tag}"
        if D.is_main():
            d.mkdir(parents=True, exist_ok=True)
        D.barrier()
        return d

    def _surrogate(self, data: ImageSet, key: Key, ck: Path | None) -> tuple[Classifier, dict[str, Any], dict]:
        p = self.params
        ssl = not p.surrogate_weights and p.ssl_epochs > 0
        # The head is a SimCLR projection when self-supervised, unused otherwise.
        build = {"in_channels": data.channels, "num_classes": PROJ_DIM if ssl else 2,
                 "image_size": int(data.images.shape[-1]), **({"width": p.width} if p.surrogate == "smallcnn" else {})}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key.seed("uc/surrogate-init"))
            model = MODELS.get(p.surrogate)(**build)
        if p.surrogate_weights:
            report = {"source": "weights", **load_surrogate_weights(model, p.surrogate_weights, arch=p.surrogate)}
        elif ssl:
            losses = train_ssl_surrogate(model, data.images, p.ssl_epochs, p.surrogate_batch_size, p.surrogate_lr,
                                         key.seed("uc/ssl") % (1 << 62), self.device,
                                         ck / "surrogate.pt" if ck else None, self.progress, self.accel,
                                         self._stage_hook("surrogate"))
            report = {"source": "simclr", "epochs": p.ssl_epochs, "loss": losses}
        else:
            report = {"source": "random-init"}
        model = model.to(self.device).eval()  # frozen surrogate, eval mode (UC Sec. 3.2)
        for q in model.parameters():
            q.requires_grad_(False)
        return model, report, surrogate_spec(model, p.surrogate, build, p.surrogate_weights)

    @torch.no_grad()
    def _features(self, model: Classifier, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
        """Surrogate features ``(N, D)`` computed on each rank's shard, then gathered in sample order."""
        n = len(images)
        mine = list(D.shard_indices(n))
        out = [model.features(images[mine[i:i + batch]].to(self.device).float().div_(255.0)).cpu()
               for i in range(0, len(mine), batch)]
        local = torch.cat(out) if out else torch.zeros(0, model.dim)
        return D.gather_shards(local, n)

    def _train_generator(self, images: torch.Tensor, assign: torch.Tensor, centers: torch.Tensor,
                         surrogate: _Standardised, key: Key, ck: Path | None,
                         phase: torch.Tensor | None = None) -> tuple[NoiseGenerator, dict[str, Any]]:
        """Train the generator; with ``phase`` ``(N, 2)`` (shape=periodic) it makes ``(p, p)`` tiles and each sample
        sees its cluster's tile at its own phase, as ``apply`` will give it."""
        p = self.params
        dev = self.device
        info = D.info()
        per_rank = D.per_rank_batch(p.batch_size)
        g = key.generator("uc/codes")
        h, w = int(images.shape[2]), int(images.shape[3])
        coarse = (max(1, h // p.gen_scale), max(1, w // p.gen_scale))
        out_size = (h, w)
        if phase is not None:
            coarse = out_size = (self.period_for(int(images.shape[1])),) * 2
            phase = phase.to(dev)
        codes = torch.rand(p.clusters, images.shape[1], *coarse, generator=g) * 2 - 1  # fixed noise codes
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(key.seed("uc/generator-init"))
            gen = NoiseGenerator(codes, p.eps, p.norm, p.gen_width, p.gen_blocks, size=out_size).to(dev)
        net = D.wrap(gen, self.accel.sync_bn)
        fwd = P.maybe_compile(net, self.accel)
        prec = self.accel.precision
        peak = scaled_lr(p.lr, p.batch_size, p.base_batch, p.lr_scaling)
        opt = torch.optim.Adam(gen.parameters(), lr=peak)
        stepper = P.Stepper(opt, dev, prec)
        sampler_seed = key.seed("uc/sampler") % (1 << 62)
        sampler = D.train_sampler(len(images), seed=sampler_seed, shuffle=True)
        steps = math.ceil(len(sampler) / per_rank)
        setup = {"world_size": info.world_size, "global_batch_size": p.batch_size, "per_rank_batch_size": per_rank,
                 "lr_scaling": p.lr_scaling, "base_lr": p.lr, "base_batch": p.base_batch,
                 "scaled_lr": peak, "warmup_epochs": p.warmup_epochs, "steps_per_epoch": steps,
                 "backend": info.backend, "launcher": info.launcher,
                 "sync_bn": D.sync_bn_state(self.accel.sync_bn)} | self.accel.record(dev)
        log(f"uc generator: {p.epochs} epochs, K={p.clusters}, global batch {p.batch_size} = {info.world_size} "
            f"rank(s) x {per_rank}, lr {peak:.4g} ({scaling_note(p.lr, p.base_batch, p.lr_scaling)}, "
            f"warm-up {p.warmup_epochs} epochs), device {dev}")
        # UC: each cluster is pushed towards the centre of a different cluster (a key-drawn derangement).
        target = _target_clusters(p.clusters, key)
        target_prob = F.softmax(centers[target] / p.temperature, dim=1).to(dev)  # (K, D)
        assign_dev = assign.to(dev)
        # The folder is named by (params, key, data), so the settings check guards against a foreign file only.
        loop = EpochLoop(ck / "generator.pt" if ck else None, gen, opt, asdict(p), "params", sampler_seed,
                         writer=D.is_main(), refusal="delete it to redo this stage")
        state = loop.resume()
        start, epochs_log = state.get("epoch", 0), state.get("history", [])
        if state:
            log(f"uc generator: resuming at epoch {start + 1}")
        bar = _bar(self.progress, p.epochs, start, f"uc generator (K={p.clusters})")
        loop.on_epoch_end.append(lambda _: D.barrier())  # no rank runs ahead of the checkpoint it depends on
        if bar is not None:
            loop.on_epoch_end.append(lambda _: bar.update(1, line=True, kl=float(epochs_log[-1]["kl"])))
        if self.on_epoch_end is not None:
            loop.on_epoch_end.append(self._stage_hook("generator"))
        step = start * steps
        for epoch in loop.epochs(start, p.epochs, lambda: {"history": epochs_log}):
            sampler.set_epoch(epoch)
            net.train()
            tot = torch.zeros(2)
            order = list(sampler)
            for i in range(0, len(order), per_rank):
                idx = order[i:i + per_rank]
                for grp in opt.param_groups:
                    grp["lr"] = lr_at(peak, step, steps, p.epochs, p.warmup_epochs, "constant")
                x = P.to_device(images[idx], dev).float().div_(255.0)
                c = assign_dev[idx]
                with P.autocast(dev, prec):
                    deltas = fwd()  # (K, C, H, W) or (K, C, p, p): all clusters in one generator pass
                    noise = deltas[c] if phase is None else tile_at_phases(deltas[c], phase[idx], (h, w))
                    xp = (x + noise).clamp(0.0, 1.0)
                    feats = surrogate.features(xp).float()
                logp = F.log_softmax(feats / p.temperature, dim=1)  # the KL in float32
                loss = F.kl_div(logp, target_prob[c], reduction="batchmean")
                stepper.step(loss)
                step += 1
                tot += torch.tensor([float(loss.detach()) * len(idx), len(idx)])
            tot = D.all_reduce_sum(tot)
            epochs_log.append({"epoch": epoch + 1, "kl": float(tot[0] / tot[1])})
        if bar is not None:
            bar.close()
        return gen.eval(), {"setup": setup, "epochs": epochs_log}

    # ------------------------------------------------------------------ apply
    def apply(self, data: ImageSet, perturbation: ClusterPerturbation) -> torch.Tensor:
        pos = {i: r for r, i in enumerate(perturbation.ids)}
        missing = [i for i in data.ids if i not in pos]
        if missing:
            raise UserError(f"sample '{missing[0]}' was not in the data the clusters were fitted on")
        rows = perturbation.assign[torch.tensor([pos[i] for i in data.ids], dtype=torch.long)]
        t = perturbation.tiles
        if t is not None and perturbation.phase_seed is not None:  # shape=periodic: each id's own phase
            delta = tile_at_phases(t[rows], phases(perturbation.phase_seed, data.ids, int(t.shape[-1])), data.size)
        else:
            delta = perturbation.deltas[rows]
        if self.params.norm == "linf":
            return add_within_linf(data.images, delta, self.params.eps)
        return levels_to_uint8((data.images.float() + delta * 255.0).round_().clamp_(0, 255))


class _Standardised(torch.nn.Module):
    """The frozen surrogate's features, standardised with the statistics of the clean data: ``(B, D)``."""

    def __init__(self, model: Classifier, mu: torch.Tensor, sd: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        dev = next(model.parameters()).device
        self.register_buffer("mu", mu.to(dev))
        self.register_buffer("sd", sd.to(dev))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model.features(x) - self.mu) / self.sd


def cluster_purity(assign: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples whose cluster's majority label is their own label (1.0: clusters are classes)."""
    k, n = int(assign.max()) + 1, int(labels.max()) + 1
    counts = torch.bincount(assign * n + labels, minlength=k * n).view(k, n)
    return round(float(counts.max(1).values.sum()) / len(assign), 4)


def _target_clusters(k: int, key: Key) -> torch.Tensor:
    """A random derangement of ``range(k)``: cluster i is pushed towards cluster ``target[i] != i``."""
    shift = 1 + int(torch.randint(0, k - 1, (1,), generator=key.generator("uc/targets")))
    perm = torch.randperm(k, generator=key.generator("uc/targets-perm"))
    target = torch.empty(k, dtype=torch.long)
    target[perm] = perm.roll(-shift)  # a cyclic shift of a random order: never a fixed point
    return target
