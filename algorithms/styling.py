"""Styles applied when QGIS loads an algorithm's outputs: class colours and names, probability colour ramps."""

from __future__ import annotations

import os
from collections.abc import Sequence

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsLayerTreeLayer,
    QgsLineSymbol,
    QgsMarkerSymbol,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsProject,
    QgsRasterShader,
    QgsRendererCategory,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor

from ..tiling.outputs import ClassInfo

# Post-processors must outlive processAlgorithm: QGIS calls them after the algorithm has returned.
_KEEP_ALIVE: list[QgsProcessingLayerPostProcessorInterface] = []


class ClassStyle(QgsProcessingLayerPostProcessorInterface):
    """Paletted renderer with the model's class colours and names; with ``above`` (the path of a layer loaded by
    the same run, e.g. its probabilities) the class layer is kept above that one in the layer tree."""

    def __init__(self, classes: Sequence[ClassInfo], above: str | None = None) -> None:
        super().__init__()
        self.classes = list(classes)
        self.above = above

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        entries = [QgsPalettedRasterRenderer.Class(c.value, QColor(*c.rgb), c.name) for c in self.classes]
        layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries))
        layer.triggerRepaint()
        if self.above:
            stack_above(layer, self.above)


class ProbabilityStyle(QgsProcessingLayerPostProcessorInterface):
    """A 0–1 (or 0–100) colour ramp on the probability of one class; with ``below`` (the class layer's path) the
    layer is hidden and kept below the class layer, which it would otherwise cover."""

    def __init__(self, band: int, maximum: float, below: str | None = None) -> None:
        super().__init__()
        self.band = band
        self.maximum = maximum
        self.below = below

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if self.below:
            node = _tree_node(layer)
            if node is not None:
                node.setItemVisibilityChecked(False)
            _stack(_find_layer(layer, self.below), layer)
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


class CategoryStyle(QgsProcessingLayerPostProcessorInterface):
    """Features drawn in their class's colour (categories on ``field``, named after the classes): polygons as
    outlines, so the imagery under them stays visible, points as markers; with ``unclassified`` (a label) the
    features without a class (NULL) in grey."""

    def __init__(self, classes: Sequence[ClassInfo], field: str = "class_value",
                 unclassified: str | None = None) -> None:
        super().__init__()
        self.classes = list(classes)
        self.field = field
        self.unclassified = unclassified

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        colours = [(c.value, c.rgb, c.name) for c in self.classes]
        if self.unclassified:
            colours.append(("", (150, 150, 150), self.unclassified))  # "": every other value, NULL included
        categories = [QgsRendererCategory(value, _symbol(layer, rgb), label) for value, rgb, label in colours]
        layer.setRenderer(QgsCategorizedSymbolRenderer(self.field, categories))
        layer.triggerRepaint()


class BoxStyle(CategoryStyle):
    """Detected boxes drawn as outlines in their class's colour (categories on ``class_value``)."""


def _symbol(layer, rgb: tuple[int, int, int]):
    """A class's symbol: an outline for polygons, a filled marker for points, a line otherwise."""
    colour = ",".join(map(str, rgb))
    if layer.geometryType() == QgsWkbTypes.PolygonGeometry:
        return QgsFillSymbol.createSimple({"style": "no", "outline_color": colour, "outline_width": "0.6"})
    if layer.geometryType() == QgsWkbTypes.PointGeometry:
        return QgsMarkerSymbol.createSimple({"color": colour, "outline_color": "35,35,35", "size": "2.6"})
    return QgsLineSymbol.createSimple({"line_color": colour, "line_width": "0.6"})


def stack_above(layer, other_path: str) -> None:
    """Put ``layer`` right above the layer of ``other_path`` (when both are in the same layer tree)."""
    _stack(layer, _find_layer(layer, other_path))


def _same_file(a: str, b: str) -> bool:
    return os.path.normcase(os.path.realpath(a.split("|")[0])) == os.path.normcase(os.path.realpath(b.split("|")[0]))


def _project_of(layer) -> QgsProject:
    return layer.project() if hasattr(layer, "project") and layer.project() else QgsProject.instance()


def _find_layer(layer, path: str):
    """The layer of the same project as ``layer`` whose source is the file ``path``, or None."""
    matches = [other for other in _project_of(layer).mapLayers().values()
               if other.id() != layer.id() and _same_file(other.source(), path)]
    return matches[-1] if matches else None


def _tree_node(layer) -> QgsLayerTreeLayer | None:
    return _project_of(layer).layerTreeRoot().findLayer(layer.id()) if layer is not None else None


def _stack(upper, lower) -> None:
    """Move ``upper``'s layer tree node right above ``lower``'s, when both are loaded and ``upper`` is below.
    (QGIS 3.22 loads a run's layers in the order of their paths, each above the last; ``layerSortKey`` came later.)"""
    upper_node, lower_node = _tree_node(upper), _tree_node(lower)
    if upper_node is None or lower_node is None or upper_node.parent() is not lower_node.parent():
        return
    parent = upper_node.parent()
    children = parent.children()
    if children.index(upper_node) < children.index(lower_node):
        return
    clone = upper_node.clone()  # insert the copy first: the layer stays in the tree, so the project keeps it
    parent.insertChildNode(children.index(lower_node), clone)
    parent.removeChildNode(upper_node)


def style_on_load(context: QgsProcessingContext, path: str, styler: QgsProcessingLayerPostProcessorInterface,
                  name: str | None = None, sort_key: int | None = None) -> None:
    """Attach ``styler`` (and a layer name) to ``path`` if QGIS will load it when the algorithm finishes;
    ``sort_key`` orders a run's layers where QGIS supports it (3.32+: lower keys above)."""
    if not path or not context.willLoadLayerOnCompletion(path):
        return
    details = context.layerToLoadOnCompletionDetails(path)
    if name:
        details.name = name
        if hasattr(details, "forceName"):
            details.forceName = True  # the name says which input and model: keep it whatever the user settings
    if sort_key is not None and hasattr(details, "layerSortKey"):
        details.layerSortKey = sort_key
    _KEEP_ALIVE.append(styler)
    del _KEEP_ALIVE[:-16]
    details.setPostProcessor(styler)


def output_name(input_layer, what: str) -> str:
    """``"<input layer name> — <what>"``, e.g. ``"S2 scene — ukis-csmask-6b-l1c classes"``: repeated runs on
    different inputs are told apart in the Layers panel."""
    name = input_layer.name() if input_layer is not None else ""
    return f"{name} — {what}" if name else what
