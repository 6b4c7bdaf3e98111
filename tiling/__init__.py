"""The shared tiled inference engine (no QGIS imports): windows, grids, blending weights, reader, writer, run loop."""
