"""Pages to explore paired maps in a browser: self-contained HTML, no server, no network.

* ``explore``: one pair, one HTML file; hover or tap a patch of either image to see its
  correspondence over the other (``explain.correspondence``), or the two paired maps.
* ``report``: a finished batch job (``pairviz_jax.batch``) as a paginated gallery of
  queries and results with both maps of each pair, loaded page by page.
* ``cli``: the ``visualize.py explore`` and ``visualize.py report`` subcommands.

Pages open from ``file://`` and fetch nothing: images are data URIs (explore) or files
beside the page (report thumbnails), maps are float16 arrays in base64 decoded in the
page's own script, and a Content-Security-Policy forbids every network request.
Importing this package is cheap (no JAX); the modules import what they need.
"""
