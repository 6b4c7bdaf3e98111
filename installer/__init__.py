"""Install the deep-learning packages (PyTorch and friends) for QGIS, without QGIS: the interpreter finder
(``interpreter``), the package folder and pip command (``pip_target``), the pip child process (``runner``) and one
install start to end (``install``). See docs/installer.md. Imports nothing of the plugin and no qgis."""

from .install import InstallError, InstallOutcome, InstallRequest, install_packages
from .pip_target import BUILDS, activate, packages_folder

__all__ = ["BUILDS", "InstallError", "InstallOutcome", "InstallRequest", "activate", "install_packages",
           "packages_folder"]
