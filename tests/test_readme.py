"""What the README promises about installing and running, against the code."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def test_the_torch_extra_is_documented_with_the_cpu_only_install():
    """`pip install 'pairviz-jax[torch]'` alone pulls the CUDA build onto a CPU machine."""
    text = " ".join(_readme().split())
    i = text.index("optional `torch` extra")
    note = text[i : i + 600]
    assert "CPU-only build first" in note and '".[torch]"' in note


def test_command_one_is_the_embedded_demo_and_its_time_is_stated():
    head = _readme().split("## Figures")[0]
    assert "python visualize.py demo" in head
    seconds = re.search(r"no training: (\d+) s on a fresh clone", head)
    assert seconds and int(seconds.group(1)) < 60


def test_the_batch_commands_use_the_default_shard_size():
    """The README's batch figures are measured with the default shard size, so its commands
    (which pass none) reach them."""
    from pairviz_jax.batch import DEFAULT_SHARD_SIZE

    section = _readme().split("## Explaining many pairs")[1].split("\n## ")[0]
    commands = section.split("```bash")[1].split("```")[0]
    assert "visualize.py batch" in commands and "--shard-size" not in commands
    assert f"shard size {DEFAULT_SHARD_SIZE:,}" in section
