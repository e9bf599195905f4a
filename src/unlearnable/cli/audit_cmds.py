"""``unlearnable audit``: the robustness matrix of methods x defences x protected fraction."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..audit.evaluate import VICTIM_HELP, default_victim, held_out_split, warn_unscored
from ..errors import UserError
from ..log import log
from ..utils import check_separate, resumable_dir
from . import accel_opts, app
from .evaluate_cmds import parse_mix, recipe_options


def _items(text: str, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise UserError(f"{what}: give at least one value")
    if len(set(items)) != len(items):
        raise UserError(f"{what}: '{text}' lists a value twice")
    return items


def method_params(methods: list[str], items: list[str]) -> dict[str, dict[str, str]]:
    """``--param em.pgd_steps=5`` -> ``{"em": {"pgd_steps": "5"}}``, checked against each method's parameters."""
    from ..protect.base import METHODS, make_params

    out: dict[str, dict[str, str]] = {m: {} for m in methods}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserError(f"--param {item}: expected METHOD.NAME=VALUE (e.g. --param em.pgd_steps=5)")
        k, v = item.split("=", 1)
        m, name = k.split(".", 1)
        if m not in out:
            raise UserError(f"--param {item}: method '{m}' is not in --methods ({', '.join(methods)})")
        out[m][name.strip()] = v.strip()
    for m in methods:
        make_params(METHODS.get(m), out[m])  # unknown method or parameter -> one line, before any work
    return out


@app.command("audit")
def audit_cmd(
    source: str = typer.Argument(..., help="a source with a train split and a test (or else val) split (path or "
                                 "built-in name)"),
    methods: str = typer.Option("cuda,em,beo,lsp,ops", "--methods", help="comma-separated protection methods"),
    defenses: str = typer.Option("none", "--defenses", help="comma-separated defences NAME[:ARGS], e.g. "
                                 "none,jpeg:10,grayscale,at:linf:8/255"),
    mix: str = typer.Option("1.0", "--mix", help="comma-separated protected fractions, e.g. 1.0,0.5"),
    out: Path = typer.Option(..., "--out", "-o", help="audit folder (re-running the same command resumes it)"),
    param: list[str] = typer.Option([], "--param", help="METHOD.NAME=VALUE (repeatable), e.g. em.pgd_steps=5"),
    limit: int = typer.Option(0, "--limit", help="use this many (seeded) training images; 0 = all"),
    size: int = typer.Option(None, "--size", min=1, help="resize every image to NxN on load (needed when the "
                             "source's images differ in size)"),
    key_seed: int = typer.Option(0, "--key-seed", help="the audit protects with a public reproducible key"),
    model: str = typer.Option(None, "--model", help=VICTIM_HELP),
    epochs: int = typer.Option(None, "--epochs", help="victim epochs (default: by device, see --model)"),
    batch_size: int = typer.Option(128, "--batch-size", help="GLOBAL batch size"),
    lr: str = typer.Option("0.1", "--lr", help="learning rate at 128 samples per step"),
    lr_scaling: str = typer.Option("none", "--lr-scaling"),
    warmup_epochs: float = typer.Option(0.0, "--warmup-epochs"),
    seed: int = typer.Option(0, "--seed", help="victim seed; also picks the protected rows for --mix"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (per rank under torchrun)"),
    precision: str = accel_opts.PRECISION,
    sync_bn: bool = accel_opts.SYNC_BN,
    compile_: bool = accel_opts.COMPILE,
) -> None:
    """Audit methods against training-time defences and partial protection; writes audit.csv/md and heatmap.png.

    Runs unchanged under torchrun / srun / jsrun: every rank protects and trains each cell data-parallel, rank 0
    writes."""
    from ..audit.matrix import run_audit, subsample
    from ..data import load
    from ..log import progress_enabled
    from ..runtime import distributed as D
    from ..train.defenses import parse_defense

    dev = D.resolve_device(device, D.launcher_env()[3])
    acc = accel_opts.accel(precision, sync_bn, compile_)
    recipe = recipe_options(model, epochs, batch_size, lr, lr_scaling, warmup_epochs, seed, dev, acc)
    method_list = _items(methods, "--methods")
    params = method_params(method_list, param)
    defense_list = _items(defenses, "--defenses")
    for d in defense_list:
        parse_defense(d)
    mixes = [parse_mix(m) for m in _items(mix, "--mix")]
    if limit < 0:
        raise UserError(f"--limit {limit}: must be >= 0")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    check_separate({"SOURCE": source}, {"--out": out})
    info = D.init_from_env(device)
    try:
        D.sync_bn_state(recipe.sync_bn)  # a CPU job that asks for SyncBatchNorm is refused before any work
        ds = load(source, size=size)
        if "train" not in ds.split_names():
            raise UserError(f"{source}: no 'train' split (present: {', '.join(ds.split_names())})")
        test_split = held_out_split(ds, str(source))
        if test_split != "test":
            log(f"audit: testing the victims on the clean '{test_split}' split ({source} has no 'test' split)")
        warn_unscored(ds, test_split, "audit: ")
        ds = subsample(ds, limit, seed)
        log(default_victim(info.device, model, epochs)[2] or f"victim: {model}, {epochs} epochs (as set)")
        # finished cells are kept; rank 0 alone writes
        with resumable_dir(out, "re-run the same command to resume the audit", writer=D.is_main()):
            D.barrier()
            rows = run_audit(ds, params, defense_list, mixes, recipe, out, device=info.device, key_seed=key_seed,
                             source=str(source), progress=progress_enabled())
    finally:
        D.shutdown()
    if not D.is_main():
        return
    from ..report.audit_figures import audit_markdown  # audit.md itself is drawn with the report, after the run

    typer.echo(audit_markdown(json.loads((out / "audit.json").read_text())).split("\n\n", 2)[-1].rstrip())
    typer.echo(f"\n{len(rows)} cells -> {out / 'audit.csv'}, {out / 'audit.md'}, {out / 'heatmap.png'}")
    bad = {r["defense"]: r["invalid_reason"] for r in rows if not r["valid"]}
    if bad:
        from ..audit.validity import EXIT_INCONCLUSIVE
        from ..log import warn

        for d, why in bad.items():
            warn(f"INVALID cells (defence '{d}'): {why}")
        raise typer.Exit(EXIT_INCONCLUSIVE)
