"""Training data for deep segmentation models (no QGIS here): chips exported from a raster and its labels, split by
spatial blocks (``export.py``), written in our layout and Esri's Classified_Tiles (``layout.py``), and read back
from either (``chips.py``)."""
