"""Object detection on rasters of any size (no QGIS): tiled detection with exact, streaming cross-tile merging
into a GeoPackage of boxes (docs/architecture.md, "Objects")."""
