"""Styles applied when QGIS loads an algorithm's outputs: class colours and names, probability colour ramps."""

from __future__ import annotations

from collections.abc import Sequence

from qgis.core import (
    QgsColorRampShader,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
)
from qgis.PyQt.QtGui import QColor

from ..tiling.outputs import ClassInfo

# Post-processors must outlive processAlgorithm: QGIS calls them after the algorithm has returned.
_KEEP_ALIVE: list[QgsProcessingLayerPostProcessorInterface] = []


class ClassStyle(QgsProcessingLayerPostProcessorInterface):
    """Paletted renderer with the model's class colours and names."""

    def __init__(self, classes: Sequence[ClassInfo]) -> None:
        super().__init__()
        self.classes = list(classes)

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        entries = [QgsPalettedRasterRenderer.Class(c.value, QColor(*c.rgb), c.name) for c in self.classes]
        layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries))
        layer.triggerRepaint()


class ProbabilityStyle(QgsProcessingLayerPostProcessorInterface):
    """A 0–1 (or 0–100) colour ramp on the probability of one class."""

    def __init__(self, band: int, maximum: float) -> None:
        super().__init__()
        self.band = band
        self.maximum = maximum

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        ramp = QgsStyle.defaultStyle().colorRamp("Viridis")
        shader_function = QgsColorRampShader(0.0, self.maximum, ramp)
        shader_function.classifyColorRamp(5, -1)
        shader = QgsRasterShader(0.0, self.maximum)
        shader.setRasterShaderFunction(shader_function)
        renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), self.band, shader)
        renderer.setClassificationMin(0.0)
        renderer.setClassificationMax(self.maximum)
        layer.setRenderer(renderer)
        layer.triggerRepaint()


def style_on_load(context: QgsProcessingContext, path: str, styler: QgsProcessingLayerPostProcessorInterface,
                  name: str | None = None) -> None:
    """Attach ``styler`` (and a layer name) to ``path`` if QGIS will load it when the algorithm finishes."""
    if not path or not context.willLoadLayerOnCompletion(path):
        return
    details = context.layerToLoadOnCompletionDetails(path)
    if name:
        details.name = name
    _KEEP_ALIVE.append(styler)
    del _KEEP_ALIVE[:-16]
    details.setPostProcessor(styler)
