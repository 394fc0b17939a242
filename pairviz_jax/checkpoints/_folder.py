"""Hugging Face model folders: ``config.json`` and the weights beside it.

A folder holds ``config.json`` and one of ``model.safetensors``,
``model.safetensors.index.json`` (shards), ``pytorch_model.bin`` or
``pytorch_model.bin.index.json``; ``preprocessor_config.json`` is optional.
Each weight file's container is still sniffed from its bytes.

Every file read is confined to the folder: a shard index naming ``../x``, an absolute
path or a symlink that resolves elsewhere is refused before the file is opened (the one
exception: a Hugging Face cache snapshot, ``<repo>/snapshots/<rev>/``, whose files are
symlinks into ``<repo>/blobs/``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from pairviz_jax.checkpoints._io import CheckpointError, read_arrays, sniff

CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _load_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            out = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        why = "nested too deep" if isinstance(e, RecursionError) else e
        raise CheckpointError(f"{path}: unreadable JSON ({why})") from None
    if not isinstance(out, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return out


def weight_files(folder: str) -> list[str]:
    """The weight files of a Hugging Face folder (the shards, for an index).

    Raises:
      CheckpointError: no config.json, no weights, or an index naming missing shards.
    """
    if not os.path.isfile(os.path.join(folder, CONFIG)):
        raise CheckpointError(
            f"{folder}: a folder without {CONFIG}: expected a Hugging Face model folder "
            f"({CONFIG} with model.safetensors or pytorch_model.bin)"
        )
    name = next((n for n in WEIGHTS if os.path.isfile(os.path.join(folder, n))), None)
    if name is None:
        raise CheckpointError(
            f"{folder}: {CONFIG} but no weights (expected one of {', '.join(WEIGHTS)})"
        )
    path = _confined(folder, name, folder)
    if not name.endswith(".index.json"):
        return [path]
    weight_map = _load_json(path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{path}: no 'weight_map' in the shard index")
    shards = [_confined(folder, s, path) for s in dict.fromkeys(weight_map.values())]
    missing = [os.path.basename(s) for s in shards if not os.path.isfile(s)]
    if missing:
        raise CheckpointError(f"{path}: shards listed but missing: {missing[:4]}")
    return shards


def _confined(folder: str, name: Any, where: str) -> str:
    """``folder/name``, refused unless it names a file inside ``folder``.

    Raises:
      CheckpointError: ``name`` (from ``where``) is not a relative path without ``..``,
        or resolves (through symlinks) outside the folder; nothing is opened.
    """
    parts = name.replace("\\", "/").split("/") if isinstance(name, str) else []
    if not parts or os.path.isabs(name) or ".." in parts or "" in parts or "\x00" in name:
        raise CheckpointError(
            f"{where}: refused shard name {str(name)[:80]!r}: expected a file name inside "
            f"{folder} (no '..', no absolute path)"
        )
    path = os.path.join(folder, name)
    real, root = os.path.realpath(path), os.path.realpath(folder)
    roots = [root]
    if os.path.basename(os.path.dirname(root)) == "snapshots":  # the Hugging Face cache
        roots.append(os.path.join(os.path.dirname(os.path.dirname(root)), "blobs"))
    if not any(os.path.commonpath([real, r]) == r for r in roots):
        raise CheckpointError(
            f"{where}: refused {name[:80]!r}: a symlink that leads outside {folder}"
        )
    return path


def sniff_folder(folder: str) -> str:
    """The container of a folder's (first) weight file, after checking the folder."""
    return sniff(weight_files(folder)[0])


def read_folder(
    folder: str,
) -> tuple[str, dict[str, np.ndarray], dict[str, Any], dict[str, Any] | None, list[str]]:
    """Reads a Hugging Face folder.

    Returns:
      ``(container, arrays, config, preprocessor_config or None, weight files)``.

    Raises:
      CheckpointError: a missing or unreadable config.json or weight file (named).
    """
    files = weight_files(folder)
    config = _load_json(os.path.join(folder, CONFIG))
    pre_path = os.path.join(folder, PREPROCESSOR)
    preprocessor = _load_json(pre_path) if os.path.isfile(pre_path) else None
    arrays: dict[str, np.ndarray] = {}
    container = ""
    for f in files:
        container, part = read_arrays(f)
        arrays.update(part)
    return container, arrays, config, preprocessor, files
