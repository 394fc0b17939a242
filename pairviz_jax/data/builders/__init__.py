"""The project's TFDS builders; importing this package registers them with TFDS.

=====================  ==============================  =====================
registry name          TFDS name                       splits
=====================  ==============================  =====================
``sop``                ``pairviz_sop``                 train, test
``hotels50k``          ``pairviz_hotels50k``           train, test
``gldv2_clean``        ``pairviz_gldv2_clean``         train, test (index)
``image_folder``       ``pairviz_image_folder``        one per subfolder
=====================  ==============================  =====================

All are manual-download builders prepared as ``array_record`` without TensorFlow
(``python -m pairviz_jax.data.prepare NAME --manual_dir DIR``); see ``builders.base``
for the stored features.
"""

from pairviz_jax.data.builders.base import ImageRecord, ManualImageBuilder
from pairviz_jax.data.builders.gldv2 import PairvizGldv2Clean
from pairviz_jax.data.builders.hotels50k import PairvizHotels50k
from pairviz_jax.data.builders.image_folder import PairvizImageFolder
from pairviz_jax.data.builders.sop import PairvizSop

BUILDERS = {
    "sop": PairvizSop,
    "hotels50k": PairvizHotels50k,
    "gldv2_clean": PairvizGldv2Clean,
    "image_folder": PairvizImageFolder,
}

__all__ = [
    "BUILDERS",
    "ImageRecord",
    "ManualImageBuilder",
    "PairvizGldv2Clean",
    "PairvizHotels50k",
    "PairvizImageFolder",
    "PairvizSop",
]
