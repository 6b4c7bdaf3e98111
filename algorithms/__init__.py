"""Processing algorithms: thin adapters from QGIS parameters to the core (one algorithm per module)."""
