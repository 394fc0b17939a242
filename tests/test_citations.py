"""Every label, legend and table names the paper its rule comes from (issue 19, item 5)."""

import os
import re

from pairviz_jax.evaluate.results import LABELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPERS = {  # method -> (authors, venue year) of the rule it implements
    "authors": ("Black et al.", "2022"),
    "transpose": ("Black et al.", "2022"),
    "gradxinput": ("Shrikumar et al.", "2016"),
    "chefer": ("Chefer et al.", "ICCV 2021"),
    "conservative": ("Ali et al.", "ICML 2022"),
    "ig": ("Sundararajan et al.", "2017"),
    "rollout": ("Abnar & Zuidema", "2020"),
}


def test_every_method_label_cites_its_paper():
    for method, (authors, year) in PAPERS.items():
        assert authors in LABELS[method] and year in LABELS[method], (method, LABELS[method])


def test_the_readme_cites_chefer_generic_explainability_at_iccv_not_their_cvpr_paper():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert "Chefer, Gur & Wolf, ICCV 2021" in text
    assert not re.search(r"Chefer[^|\n]{0,40}CVPR", text)
