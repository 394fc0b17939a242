"""The code blocks of README.md and of the docs pages, in the order they are run.

The order: ``README.md``, then the pages of ``docs/index.md``'s toctree in its order, then
``docs/index.md``. A page that uses what another page's blocks made (``photos/``, the
``out/knn`` batch job) runs after it in one fresh copy of the repository (one of ``CHAINS``);
every other page runs alone in its own copy, so the runs are independent (``runs``) and the
test runs them in parallel.
A page's ```` ```bash ```` blocks run in order in its run's copy; its ```` ```python ````
blocks then run in one Python process, in order, sharing their names.
A block preceded by ``<!-- not run by tests/test_docs_commands.py: REASON -->`` is not run.
"""

from __future__ import annotations

import dataclasses
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_RUN = "<!-- not run by tests/test_docs_commands.py:"
RUN = ("bash", "python")  # the languages that run; any other block is text
# Pages that use what an earlier page of the same chain made, in order: the figures page
# writes photos/, the scale page reads them and writes the out/pairs and out/knn batch jobs,
# and the correspondence page reads all three.
CHAINS = (("docs/figures.md", "docs/scale.md", "docs/correspondence.md"),)


@dataclasses.dataclass(frozen=True)
class Block:
    page: str  # relative to the repository, e.g. "docs/scale.md"
    line: int  # 1-based line of the block's first line of code
    lang: str  # what follows the opening fence ("bash", "python", "", "{eval-rst}", ...)
    text: str
    why: str | None  # why it is not run (the marker's reason), or None


def read(page: str, root: str = ROOT) -> str:
    with open(os.path.join(root, page), encoding="utf-8") as f:
        return f.read()


def toctree(root: str = ROOT) -> list[str]:
    """The pages of ``docs/index.md``'s toctree, in order, as ``docs/<name>.md``."""
    text = read("docs/index.md", root)
    body = text.split("```{toctree}", 1)[1].split("```", 1)[0]
    names = [s.strip() for s in body.splitlines() if s.strip() and not s.startswith(":")]
    return [f"docs/{name}.md" for name in names]


def pages(root: str = ROOT) -> list[str]:
    """Every page whose blocks run, in the order they run: the README, the toctree's pages,
    then ``docs/index.md`` itself."""
    return ["README.md", *toctree(root), "docs/index.md"]


def runs(root: str = ROOT) -> list[tuple[str, ...]]:
    """``pages`` as independent runs, each in its own copy of the repository: a chain of
    ``CHAINS`` (its pages in ``pages``'s order), or a page alone; pages with no block to run
    are left out. In the order of each run's first page."""
    order = pages(root)
    chained = {page: chain for chain in CHAINS for page in chain}
    out = []
    for page in order:
        run = tuple(sorted(chained.get(page, (page,)), key=order.index))
        runnable = any(b.lang in RUN and b.why is None for p in run for b in blocks(p, root))
        if run not in out and runnable:
            out.append(run)
    return out


def blocks(page: str, root: str = ROOT) -> list[Block]:
    """Every fenced block of ``page``, in order."""
    lines = read(page, root).splitlines()
    out, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(```+)(.*)$", lines[i].strip())
        if fence:
            ticks, lang = fence.group(1), fence.group(2).strip()
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i].strip() != ticks:
                body.append(lines[i])
                i += 1
            before = [line for line in lines[: start - 1] if line.strip()]
            last = before[-1] if before else ""
            why = last.split(NOT_RUN, 1)[1].rstrip("-> ").strip() if NOT_RUN in last else None
            out.append(Block(page, start + 1, lang, "\n".join(body), why))
        i += 1
    return out


def commands(text: str) -> list[str]:
    """A bash block's commands as printed (continuation lines joined, comment lines dropped)."""
    out, current = [], ""
    for line in text.splitlines():
        if not current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            out.append(current.strip())
        current = ""
    return out


def slug(heading: str) -> str:
    """MyST's (and GitHub's) anchor of a heading: lower case, punctuation dropped, spaces
    to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower().replace(" ", "-"))


def anchors(page: str, root: str = ROOT) -> set[str]:
    """The anchors of a page's headings (outside code blocks)."""
    found, fenced = set(), False
    for line in read(page, root).splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"^#{1,6} ", line):
            found.add(slug(line.lstrip("#")))
    return found
