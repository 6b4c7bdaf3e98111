"""Objects on rasters of any size (no QGIS): tiled detection with exact, streaming cross-tile merging into a
GeoPackage of boxes, and the classification of a layer's features from chips of the raster around them
(docs/architecture.md, "Objects")."""
