"""Model-zoo recipes: turn real, openly licensed pretrained weights into Deep Raster model packages."""
