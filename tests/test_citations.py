"""Every label, legend and table names the paper its rule comes from (issue 19, item 5)."""

import re

from pairviz_jax.evaluate.results import LABELS

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


def test_the_docs_cite_chefer_generic_explainability_at_iccv_not_their_cvpr_paper():
    """The methods table (docs/trust.md) cites the paper; no page cites the CVPR one."""
    from tests import docs_blocks

    texts = {page: docs_blocks.read(page) for page in docs_blocks.pages()}
    assert "Chefer, Gur & Wolf, ICCV 2021" in texts["docs/trust.md"]
    for page, text in texts.items():
        assert not re.search(r"Chefer[^|\n]{0,40}CVPR", text), page
