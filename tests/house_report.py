"""Prints the house numbers of ``pairviz_jax``: the import graph and the longest functions.

Run from the repository root: ``python3 -m tests.house_report`` (3 s of CPU, no JAX imported).
It reads the scanners of ``tests/test_house.py`` and ``tests/test_imports.py`` (the numbers
are what those tests check), so it lives beside them: tools import nothing from tests/.
"""

from __future__ import annotations

import ast

from tests import test_house as house
from tests import test_imports as imports

LOWER = {  # a layer -> the packages it must not import
    "models": ("explain", "train", "data", "plotting"),
    "explain": ("train", "data", "plotting"),
}


def graph_numbers() -> dict[str, int]:
    graph = imports.import_graph()
    modules = imports._modules()
    function_level = 0
    for path in modules.values():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for n in ast.walk(fn):
                    if isinstance(n, (ast.Import, ast.ImportFrom)):
                        mod = n.module or "" if isinstance(n, ast.ImportFrom) else ""
                        names = [a.name for a in n.names]
                        if mod.startswith("pairviz_jax") or any(
                            x.startswith("pairviz_jax") for x in names
                        ):
                            function_level += 1

    def layer(m: str) -> str:
        return m.split(".")[1] if m.count(".") else ""

    upward = sum(layer(b) in LOWER.get(layer(a), ()) for a, deps in graph.items() for b in deps)
    into_train = sum(
        layer(b) == "train" and layer(a) not in ("train", "runs")
        for a, deps in graph.items()
        for b in deps
    )
    return {
        "modules": len(graph),
        "import edges (module -> module)": sum(len(d) for d in graph.values()),
        "function-level imports of pairviz_jax": function_level,
        "cycles": len(imports.cycles(graph)),
        "private names imported across modules": len(imports.private_imports()),
        "imports running upwards (models/explain)": upward,
        "imports of train outside train/ and runs/": into_train,
        "runs -> train.step": sum(
            layer(a) == "runs" and b == "pairviz_jax.train.step"
            for a, deps in graph.items()
            for b in deps
        ),
        "modules importing pairviz_jax._util": sum(
            "pairviz_jax._util" in d for d in graph.values()
        ),
    }


def main() -> None:
    print("| import graph | count |\n|---|---|")
    for k, v in graph_numbers().items():
        print(f"| {k} | {v} |")
    print("\n| house rule | sites |\n|---|---|")
    print(f"| os.replace / rename sites | {len(house.rename_sites())} |")
    print(f"| x / 255 sites | {len(house.div255_sites())} |")
    print(f"| hand-written norm floors (maximum(norm(x), 1e-12)) | {len(house.norm_floors())} |")
    literals = sum(
        isinstance(n, ast.Constant) and n.value == 1e-12
        for tree in house._files().values()
        for n in ast.walk(tree)
    )
    print(f"| 1e-12 literals | {literals} |")
    print(
        f"| files over {house.MAX_FILE_LINES} lines | "
        f"{sum(n > house.MAX_FILE_LINES for n, _ in house.file_lengths())} |"
    )
    print("\n| longest functions | lines |\n|---|---|")
    for n, where in house.function_lengths()[:10]:
        print(f"| {where} | {n} |")


if __name__ == "__main__":
    main()
