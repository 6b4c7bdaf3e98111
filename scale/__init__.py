"""Scale-out: a tiled run cut into pieces and computed on a Dask cluster (``dask.distributed``).

A piece is a window of the output (one column panel of the engine, a band of rows) computed by a worker with every
tile of the whole grid that reaches it, so its pixels equal the in-process run's; the client writes the finished
pieces into the final outputs in order and commits them all together. No QGIS here: ``algorithms/`` adapts it.
"""
