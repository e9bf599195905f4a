"""``unlearnable report DIR``: any output folder to ``report.md`` and a self-contained ``report.html``.

Reads results files only (manifests, results JSON/CSV, ``config.yaml``, existing PNGs) and never trains; figures
that a kind draws from its results (the audit heat map, the sweep plot) are drawn here first. A
``report.md`` the command wrote itself (the demo's, forget's) is kept: the generated part lives between two marker
lines and only that part is replaced on the next rendering. The HTML is the same Markdown with every figure
embedded as a base64 data URI, so the one file opens anywhere.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

from ..errors import UserError
from ..utils import write_text
from .kinds import detect, draw, sections

BEGIN = "<!-- unlearnable report: generated from the results files; this block is replaced on each rendering -->"
END = "<!-- end of the generated report -->"
TITLES = {"protect": "Protection", "evaluate": "Protection audit (victim training)", "audit": "Robustness audit",
          "sweep": "Sweep", "segment": "3D segmentation model", "forget": "Unlearning", "generic": "Results"}
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.8em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f3f3f3}img{max-width:100%}code,pre{background:#f6f6f6;font-size:13px}
pre{padding:.6em;overflow-x:auto}h1{border-bottom:1px solid #ddd}"""


def split_authored(text: str) -> tuple[str, str]:
    """(text before the generated block, text after it); the whole text is authored when it has no block."""
    if BEGIN in text and END in text.split(BEGIN, 1)[1]:
        before, rest = text.split(BEGIN, 1)
        return before, rest.split(END, 1)[1]
    return text, ""


def _is_output(d: Path) -> bool:
    """A sub-output (a demo's protect run, a sweep cell), as opposed to a data folder (an image class folder)."""
    return any((d / name).is_file() for name in ("manifest.json", "results.json", "report.md"))


def _figures(folder: Path, mentioned: str) -> list[str]:
    """Every PNG in ``folder`` and in the sub-outputs one level down that the text does not show yet, as Markdown
    images. The images of a protected image folder (``out/<class>/*.png``) are data, not figures: never embedded."""
    subs = [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".") and _is_output(d)]
    pngs = sorted(folder.glob("*.png")) + [p for d in subs for p in sorted(d.glob("*.png"))]
    rel = [p.relative_to(folder).as_posix() for p in pngs]
    return [f"![{r}]({r})\n" for r in rel if f"]({r})" not in mentioned]


def generated(folder: Path, authored: str) -> str:
    """The generated block: tables of the folder's kind (unless a command-written report holds them), the figures
    it does not show yet, and the resolved configuration."""
    name = detect(folder)
    lines: list[str] = []
    if not authored.strip():
        lines += [f"# {TITLES.get(name, name)} report: {folder.name}", "", *sections(folder)]
    figs = _figures(folder, authored + "\n".join(lines))
    if figs:
        lines += ["## Figures", "", *figs]
    config = folder / "config.yaml"
    if config.is_file():
        lines += ["## Configuration", "", f"Re-run with `--config {config.name}` (flags override the file):", "",
                  "```yaml", config.read_text().rstrip(), "```", ""]
    return "\n".join(lines).strip() + "\n"


def markdown(folder: Path) -> str:
    """The new ``report.md`` of ``folder``: authored text kept, the generated block (re)built."""
    old = folder / "report.md"
    before, after = split_authored(old.read_text()) if old.is_file() else ("", "")
    authored = before + after
    sep = "\n" if before and not before.endswith("\n\n") else ""
    return f"{before}{sep}{BEGIN}\n{generated(folder, authored)}{END}\n{after.lstrip()}"


def _embed(folder: Path, src: str) -> str | None:
    """``src`` as a data URI when it names an image file inside ``folder``; otherwise None (left as it was)."""
    if re.match(r"^[a-z]+:", src):
        return None
    path = (folder / src).resolve()
    if folder.resolve() not in path.parents or path.suffix.lower() not in MIME or not path.is_file():
        return None
    return f"data:{MIME[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode()}"


def to_html(text: str, folder: Path) -> str:
    """A standalone HTML page of Markdown ``text``; images of ``folder`` embedded, no external files."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for tok in tokens:
        for child in tok.children or []:
            if child.type == "image":
                uri = _embed(folder, str(child.attrGet("src") or ""))
                if uri is not None:
                    child.attrSet("src", uri)
    body = md.renderer.render(tokens, md.options, {})
    first = re.search(r"^# (.+)$", text, re.M)
    title = html.escape(first.group(1) if first else f"report: {folder.name}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head>\n<body>\n{body}</body></html>\n")


def render_folder(folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into output folder ``folder``; returns their paths."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (give an output folder of protect, evaluate, audit, sweep, segment "
                        "train, forget or demo)")
    draw(folder)  # the figures first, so that the Markdown shows them
    text = markdown(folder)
    write_text(folder / "report.md", text)
    write_text(folder / "report.html", to_html(text, folder))
    return folder / "report.md", folder / "report.html"
