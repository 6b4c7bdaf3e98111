"""What "Detect objects" and "Classify objects" share: the toolbox group Objects, the model package parameter and
the GeoPackage output. It defines no concrete algorithm (the base class is abstract)."""

from __future__ import annotations

from qgis.core import QgsProcessingParameterFile, QgsProcessingParameterVectorDestination

from ..models.sources import MODEL_FILE_FILTER
from .base import TiledModelAlgorithm


class ObjectModelAlgorithm(TiledModelAlgorithm):
    """Base of the algorithms that run a model package over a raster and write features to a GeoPackage."""

    abstract = True
    MODEL = "MODEL"
    OUTPUT = "OUTPUT"

    def group(self) -> str:
        return self.tr("Objects")

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "objects"

    def model_parameter(self) -> QgsProcessingParameterFile:
        """The model package (.drpk or model.json)."""
        return QgsProcessingParameterFile(
            self.MODEL, self.tr("Model package (.drpk, .json)"), behavior=QgsProcessingParameterFile.File,
            fileFilter=MODEL_FILE_FILTER)

    def vector_output(self, label: str) -> QgsProcessingParameterVectorDestination:
        """The output layer, a file (a GeoPackage), never a memory layer."""
        output = QgsProcessingParameterVectorDestination(self.OUTPUT, label)
        output.setSupportsNonFileBasedOutput(False)
        return output
