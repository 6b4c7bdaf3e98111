"""Processing algorithm "Install deep-learning packages": pip-installs the pinned PyTorch stack with QGIS's own
Python into the profile's ``python/deepraster-packages`` folder (see ``installer/`` and docs/installer.md). It needs
none of those packages itself."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputFolder,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
)

from ..installer import BUILDS, InstallError, InstallRequest, install_packages, packages_folder
from .base import DeepRasterAlgorithm


def profile_packages_folder() -> Path:
    """The package folder of the running QGIS profile."""
    return packages_folder(QgsApplication.qgisSettingsDirPath())


class InstallPackagesAlgorithm(DeepRasterAlgorithm):
    BUILD = "BUILD"
    WHEELS = "WHEELS"
    REQUIREMENTS = "REQUIREMENTS"
    LOG = "LOG"
    FOLDER = "FOLDER"

    required_packages: dict[str, str] = {}  # it installs them

    def name(self) -> str:
        return "install_packages"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Install deep-learning packages")

    def group(self) -> str:
        return self.tr("Setup")

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "setup"

    def flags(self):
        return super().flags() | QgsProcessingAlgorithm.FlagHideFromModeler

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Installs PyTorch, segmentation-models-pytorch, timm, scikit-learn and the other packages Deep Raster "
            "needs, at the tested versions, with QGIS's own Python, into the folder python/deepraster-packages of "
            "your QGIS profile. Nothing outside that folder changes (QGIS's numpy and GDAL stay as they are); delete "
            "the folder to uninstall.\n\n"
            "Choose the CPU build unless the computer has an NVIDIA GPU with a recent driver (the CUDA 13.0 build "
            "needs driver 580 or newer). The download is about 200 MB for the CPU build and 3 GB (6 GB on disk) for "
            "the CUDA build. The CPU build (and the CUDA build on Windows) comes from download.pytorch.org; where that "
            "server cannot be reached, choose PyPI's standard build (CUDA 13.0 on Linux, CPU on Windows and macOS). "
            "Without internet, "
            "give a folder of wheel files (made elsewhere with pip download).\n\n"
            "Restart QGIS when it has finished. The log shows every line pip printed."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterEnum(self.BUILD, self.tr("PyTorch build"),
                                                     options=[self.tr(b.label) for b in BUILDS], defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(
            self.WHEELS, self.tr("Offline wheel folder (empty: download)"),
            behavior=QgsProcessingParameterFile.Folder, optional=True))
        requirements = QgsProcessingParameterFile(
            self.REQUIREMENTS, self.tr("Requirements file (empty: tested versions)"),
            fileFilter="Requirements (*.txt)", optional=True)
        requirements.setFlags(requirements.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(requirements)
        self.addParameter(QgsProcessingParameterFileDestination(self.LOG, self.tr("Installation log"),
                                                                fileFilter="Log files (*.log *.txt)"))
        self.addOutput(QgsProcessingOutputFolder(self.FOLDER, self.tr("Package folder")))

    def run_algorithm(self, parameters, context, feedback) -> dict:
        build = BUILDS[self.parameterAsEnum(parameters, self.BUILD, context)]
        wheels = self.parameterAsFile(parameters, self.WHEELS, context)
        requirements = self.parameterAsFile(parameters, self.REQUIREMENTS, context)
        log = self.parameterAsFileOutput(parameters, self.LOG, context)
        request = InstallRequest(Path(QgsApplication.qgisSettingsDirPath()), build=build.key,
                                 wheel_dir=Path(wheels) if wheels else None, log_path=Path(log),
                                 **({"requirements": Path(requirements)} if requirements else {}))
        feedback.pushInfo(f"Installing the {build.label} packages; this can take several minutes.")
        feedback.setProgressText(self.tr("Installing packages with pip"))
        try:
            outcome = install_packages(request, on_line=feedback.pushConsoleInfo,
                                       on_progress=lambda fraction: feedback.setProgress(100.0 * fraction),
                                       is_cancelled=feedback.isCanceled)
        except InstallError as exc:
            raise QgsProcessingException(str(exc)) from exc
        if outcome.pip.cancelled:
            feedback.reportError(f"Cancelled: pip was stopped. Run the installer again to complete the install "
                                 f"(log: {log}).", fatalError=False)
        else:
            feedback.pushInfo(f"Installed into {outcome.folder} in {outcome.pip.seconds:.0f} s. Restart QGIS so "
                              "that every algorithm uses the new packages.")
        return {self.LOG: log, self.FOLDER: str(outcome.folder)}
