"""The shared tiled inference engine (no QGIS imports): grids, blending windows, reader, writer, run loop."""
