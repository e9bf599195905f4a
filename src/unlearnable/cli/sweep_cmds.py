"""``unlearnable sweep``: run a study grid locally, as torchrun jobs, or emit a SLURM/LSF array job."""

from __future__ import annotations

import csv
import io
import shlex
import subprocess
import sys
from pathlib import Path

import typer

from . import app
from .outputs import wrote

ARRAY_TEMPLATES = {
    "slurm": """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --array=0-{last}
#SBATCH --nodes=1
#SBATCH --ntasks-per-node={nproc}
#SBATCH --gpus-per-node={nproc}
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output={out}/logs/%A_%a.out
# One sweep cell per array task; srun starts {nproc} ranks (SLURM_PROCID/SLURM_NTASKS are mapped by unlearnable).
# After the array finishes, merge with: {merge}
srun {cmd} --cell $SLURM_ARRAY_TASK_ID
""",
    "lsf": """#!/bin/bash
#BSUB -J "{name}[1-{count}]"
#BSUB -nnodes 1
#BSUB -W 12:00
#BSUB -o {out}/logs/%J_%I.out
# One sweep cell per array task (LSF indices start at 1); jsrun starts {nproc} ranks
# (JSM_NAMESPACE_RANK/SIZE are mapped by unlearnable). After the array finishes, merge with: {merge}
jsrun -n {nproc} -a 1 -g 1 -c 7 {cmd} --cell $((LSB_JOBINDEX - 1))
""",
}


@app.command("sweep")
def sweep_cmd(
    study_file: Path = typer.Argument(..., help="study YAML: datasets, methods, grid, fixed"),
    out: Path = typer.Option(None, "--out", "-o", help="sweep folder (default: 'out' in the file, or its name)"),
    launcher: str = typer.Option("local", "--launcher", help="local (this process / your torchrun) or torchrun "
                                                              "(one torchrun job per cell)"),
    nproc: int = typer.Option(2, "--nproc", help="processes per torchrun job or array task"),
    emit: str = typer.Option(None, "--emit", help="slurm or lsf: write an array job script, one cell per task"),
    cell: int = typer.Option(None, "--cell", help="run only this cell index (array tasks); no merge"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the cells and whether they are finished"),
    merge_only: bool = typer.Option(False, "--merge", help="only merge finished cells into sweep.csv + plot"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N (per rank)"),
) -> None:
    """Run a grid of protect+audit cells (resumable), then merge into sweep.csv and accuracy_vs_batch_size.png."""
    from ..audit.sweep import load_study, merge, run_study, status
    from ..errors import UserError
    from ..registry import look_up_option
    from ..runtime import distributed as D
    from ..utils import check_separate

    look_up_option(launcher, ("local", "torchrun"), "--launcher")
    study = load_study(study_file, out)
    check_separate({f"dataset '{k}'": v for k, v in study.datasets.items()}, {"--out": study.out})
    cells = status(study)
    wrote(study.out if not (dry_run or emit or cell is not None) else None)  # config + report once merged
    base = [sys.executable, "-m", "unlearnable", "sweep", str(study_file.resolve()), "--out", str(study.out.resolve()),
            "--device", device]
    if dry_run:
        for i, c, done in cells:
            shown = ", ".join(f"{k}={c[k]}" for k in study.varied())
            typer.echo(f"{i:4d}  {'done' if done else 'todo'}  {shown}")
        typer.echo(f"{len(cells)} cells, {sum(d for _, _, d in cells)} finished -> {study.out}")
        return
    if emit is not None:
        look_up_option(emit, tuple(ARRAY_TEMPLATES), "--emit")
        script = study.out / f"sweep.{'sbatch' if emit == 'slurm' else 'lsf'}"
        study.out.mkdir(parents=True, exist_ok=True)
        (study.out / "logs").mkdir(exist_ok=True)
        text = ARRAY_TEMPLATES[emit].format(name=study.name, last=len(cells) - 1, count=len(cells), nproc=nproc,
                                            out=shlex.quote(str(study.out.resolve())), cmd=shlex.join(base),
                                            merge=shlex.join(base + ["--merge"]))
        script.write_text(text)
        typer.echo(f"wrote {script} ({len(cells)} array tasks); submit with "
                   f"{'sbatch' if emit == 'slurm' else 'bsub <'} {script}")
        return
    main = True
    if not merge_only:
        if launcher == "torchrun":
            for i, _, done in cells if cell is None else [cells[cell]]:
                if done:
                    continue
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                       "-m", "unlearnable", *base[3:], "--cell", str(i)]
                if subprocess.run(cmd).returncode != 0:
                    raise UserError(f"cell {i}: torchrun job failed (finished cells are kept; re-run to resume)")
        else:
            D.init_from_env(device)
            main = D.is_main()
            try:
                run_study(study, D.info().device, only=cell)
            finally:
                D.shutdown()
        if cell is not None:
            return
    if main:  # one writer: rank 0 of a local/torchrun-launched sweep
        csv_path = merge(study)  # the report drawn at the end adds accuracy_vs_batch_size.png
        n = sum(1 for line in csv_path.read_text().splitlines()[1:] if line)
        typer.echo(f"merged {n}/{len(cells)} cells -> {csv_path}")
        invalid = sum(r.get("valid") == "no" for r in csv.DictReader(io.StringIO(csv_path.read_text())))
        if invalid:
            from ..audit.validity import EXIT_INCONCLUSIVE
            from ..log import warn

            warn(f"{invalid} cell(s) INVALID (valid=no in {csv_path.name}): their clean victim did not beat chance "
                 f"clearly, so they prove nothing; train for more epochs or on more images")
            raise typer.Exit(EXIT_INCONCLUSIVE)
