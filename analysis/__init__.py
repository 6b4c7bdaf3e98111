"""Feature-space analysis with scikit-learn: estimators, signed saved models, reduction, clustering, similarity,
supervised learning with honest validation, and the QGIS-free entry point the Processing adapters call
(:mod:`analysis.pipeline`). Imports ``tiling/`` only; never ``models/`` or qgis."""
