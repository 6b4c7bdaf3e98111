"""Dialog widgets of the advanced parameters whose 0 / −1 means "the model package's value" (tile size, overlap,
input value scale): at that value the spin box reads "package default (256)" for the package chosen in the MODEL
parameter, and follows every change of it (only the package's description is read: no weights, no torch).

The parameter's value stays 0 / −1, so the algorithm still takes the package's value at run time. Only the
algorithm dialog changes: the Batch and Model Builder dialogs get the widgets QGIS makes without this, and
``qgis_process`` and ``processing.run`` never build widgets. The parameters name the factory class in their
``widget_wrapper`` metadata as a dotted string, which QGIS's Processing GUI imports when it builds a dialog.
"""

from __future__ import annotations

from collections.abc import Iterable

from qgis.core import QgsProcessingContext, QgsProcessingParameterDefinition
from qgis.gui import QgsAbstractProcessingParameterWidgetWrapper, QgsGui, QgsProcessingGui
from qgis.PyQt.QtWidgets import QAbstractSpinBox, QWidget

from ..models.package_defaults import inference_defaults

MODEL = "MODEL"
"""The parameter that names the model package."""
FIELDS = {"TILE_SIZE": "tile_size", "OVERLAP": "overlap", "VALUE_SCALE": "value_scale"}
"""Parameter name → the :class:`~models.package_defaults.InferenceDefaults` field its special value stands for."""
UNKNOWN = "package default"


def show_package_defaults(params: Iterable[QgsProcessingParameterDefinition]) -> list[QgsProcessingParameterDefinition]:
    """``params``, those named in :data:`FIELDS` set up to show the chosen package's value in the dialog."""
    params = list(params)
    for param in params:
        if param.name() in FIELDS:
            wrapper = {"class": f"{__name__}.{PackageDefaultWidget.__name__}", "field": FIELDS[param.name()]}
            param.setMetadata({**param.metadata(), "widget_wrapper": wrapper})
    return params


def special_text(value: float | None) -> str:
    """What the spin box shows at its special value: ``package default (256)``, or ``package default`` while no
    readable package is chosen."""
    return UNKNOWN if value is None else f"{UNKNOWN} ({value:g})"


class PackageDefaultWidget:
    """What a Processing dialog builds for a parameter set up by :func:`show_package_defaults` (QGIS calls this class
    as ``cls(parameter, dialog, row, col, field=...)``): a :class:`PackageDefaultWrapper` in the algorithm dialog, the
    wrapper QGIS makes without the metadata in the Model Builder and Batch dialogs (as
    ``WidgetWrapperFactory.create_wrapper`` does)."""

    def __new__(cls, parameter: QgsProcessingParameterDefinition, dialog, row: int = 0, col: int = 0,
                field: str = "tile_size", model: str = MODEL):
        registry = QgsGui.processingGuiRegistry()
        kind = type(dialog).__name__
        if kind == "ModelerParametersDialog":
            wrapper = registry.createModelerParameterWidget(dialog.model, dialog.childId, parameter, dialog.context)
        elif kind == "BatchAlgorithmDialog":
            wrapper = registry.createParameterWidgetWrapper(parameter, QgsProcessingGui.Batch)
        else:
            wrapper = PackageDefaultWrapper(parameter, field, model)
        wrapper.setDialog(dialog)
        return wrapper


class PackageDefaultWrapper(QgsAbstractProcessingParameterWidgetWrapper):
    """QGIS's own numeric widget for the parameter (built by the C++ wrapper this one holds, so range, decimals,
    steps and expressions are QGIS's), whose special value text names the value of the package chosen in the
    ``model`` parameter."""

    def __init__(self, parameter: QgsProcessingParameterDefinition, field: str, model: str = MODEL) -> None:
        super().__init__(parameter, QgsProcessingGui.Standard)
        self._field, self._model = field, model
        self._inner = QgsGui.processingGuiRegistry().createParameterWidgetWrapper(parameter, QgsProcessingGui.Standard)
        self._inner.widgetValueHasChanged.connect(lambda _: self.widgetValueHasChanged.emit(self))

    def createWidget(self) -> QWidget:  # noqa: N802 (QGIS API)
        return self._inner.createWrappedWidget(QgsProcessingContext())

    def setWidgetValue(self, value, context: QgsProcessingContext) -> None:  # noqa: N802 (QGIS API)
        self._inner.setParameterValue(value, context)

    def widgetValue(self):  # noqa: N802 (QGIS API)
        return self._inner.parameterValue()

    def postInitialize(self, wrappers: list[QgsAbstractProcessingParameterWidgetWrapper]) -> None:  # noqa: N802
        self._inner.postInitialize(wrappers)
        for wrapper in wrappers:
            if wrapper.parameterDefinition().name() == self._model:
                wrapper.widgetValueHasChanged.connect(self.model_changed)
                self.model_changed(wrapper)

    def model_changed(self, wrapper: QgsAbstractProcessingParameterWidgetWrapper) -> None:
        """Show the default of the package the MODEL widget names now (a path may be half-typed or invalid)."""
        path = wrapper.parameterValue()
        defaults = inference_defaults(path if isinstance(path, str) else None)
        self.show_default(None if defaults is None else getattr(defaults, self._field))

    def show_default(self, value: float | None) -> None:
        """Label the special value (the minimum, 0 or −1) with ``value``, the package's (None: not known)."""
        widget = self._inner.wrappedWidget()  # looked up each time: a Python reference to it does not stay valid
        spin_box = widget if isinstance(widget, QAbstractSpinBox) or widget is None \
            else widget.findChild(QAbstractSpinBox)
        if spin_box is not None:
            spin_box.setSpecialValueText(special_text(value))
