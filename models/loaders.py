"""Turning a model package into a ready torch module: the network built from the package's architecture (on the
meta device, without random initialisation, where that works) and filled with its weights.

The weights file is read by :mod:`deepraster.models.weights` (safe formats only unless the caller trusts a pickle);
the checksum in the package is verified before anything is read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import ModelPackageError
from .package import verify_weights
from .spec import Architecture, ModelPackage
from .weights import load_pickled_module, load_torchscript, read_state_dict


def build_network(arch: Architecture, class_values: Sequence[int] = ()):
    """An untrained network of the described architecture (no download: pretrained weights are not fetched).
    ``class_values``: the labels a torchvision detector reports (its package's class values, in order)."""
    if arch.framework == "torchvision":
        from .torchvision_detectors import build_torchvision_detector

        return build_torchvision_detector(arch, class_values)
    if arch.framework == "smp":
        import segmentation_models_pytorch as smp

        try:
            return smp.create_model(arch=arch.arch, encoder_name=arch.encoder, encoder_weights=None,
                                    in_channels=arch.in_channels, classes=arch.out_channels, **dict(arch.kwargs))
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelPackageError(
                f"segmentation-models-pytorch cannot build architecture {arch.arch!r} with encoder {arch.encoder!r} "
                f"({exc}). Check architecture.arch and architecture.encoder in the package."
            ) from exc
    if arch.framework == "timm":
        import timm

        if not timm.is_model(arch.arch):
            import difflib

            close = difflib.get_close_matches(arch.arch, timm.list_models(), n=5)
            hint = f" Close names: {', '.join(close)}." if close else ""
            raise ModelPackageError(f"timm has no model named {arch.arch!r}.{hint}")
        kwargs = {"in_chans": arch.in_channels, **dict(arch.kwargs)}
        if arch.out_channels:
            kwargs.setdefault("num_classes", arch.out_channels)
        return timm.create_model(arch.arch, pretrained=False, **kwargs)
    raise ModelPackageError(f"Framework {arch.framework!r} has no network to build; its weights are the model.")


#: In-place tensor methods that only change values (what weight initialisation calls): skipped on meta tensors.
VALUE_FILLS = frozenset({
    "uniform_", "normal_", "fill_", "zero_", "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_", "clamp_min_",
    "clamp_max_", "copy_", "exponential_", "bernoulli_", "random_", "log_normal_", "cauchy_", "geometric_",
})
_SKIP_FILLS: list = []  # the TorchFunctionMode class, made on first use (torch is imported only when needed)


def skip_value_fills():
    """A torch function mode (per thread) in which :data:`VALUE_FILLS` on meta tensors return at once: they have no
    values to fill, but PyTorch still runs their shape checks, in Python for some (timm's ``trunc_normal_``), which
    then costs more than initialising real tensors."""
    if not _SKIP_FILLS:
        import torch
        from torch.overrides import TorchFunctionMode

        class SkipValueFills(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if (getattr(func, "__name__", "") in VALUE_FILLS and args and isinstance(args[0], torch.Tensor)
                        and args[0].is_meta):
                    return args[0]
                return func(*args, **(kwargs or {}))

        _SKIP_FILLS.append(SkipValueFills)
    return _SKIP_FILLS[0]()


def build_empty(build: Callable[[], Any]):
    """``build()`` run on PyTorch's meta device: the network's structure without memory or random initialisation
    (most of the time a constructor takes), for :func:`fill_empty`; None where that fails (a constructor that reads
    a tensor's value, a PyTorch without the meta device context, or an architecture that cannot be built at all,
    which the normal build then reports)."""
    import torch

    try:
        with torch.device("meta"), skip_value_fills():
            return build()
    except Exception:  # noqa: BLE001 (constructors raise anything on the meta device; the normal build will tell)
        return None


def fill_empty(net, state: Mapping[str, Any]) -> bool:
    """Give the meta-device network ``net`` (from :func:`build_empty`) the tensors of ``state``, whose keys and
    shapes are the network's own; True when every tensor of the network is real afterwards.

    The tensors are converted to the network's dtypes and copied into contiguous memory of their own, as
    ``load_state_dict`` copies them into an initialised network (so the network does not keep a memory-mapped weights
    file open either). False where the network holds something outside its state dict that only its constructor
    computes (a non-persistent buffer, a tensor attribute), or this PyTorch cannot assign: build it normally then.
    """
    import torch

    own = net.state_dict()
    loose = [v for m in net.modules() for v in vars(m).values() if isinstance(v, torch.Tensor)]
    if loose or any(name not in own for name, _ in net.named_buffers()):
        return False  # tensors only the constructor computes: they would stay on the meta device
    filled = {key: value.to(dtype=own[key].dtype, memory_format=torch.contiguous_format, copy=True)
              for key, value in state.items()}
    try:
        net.load_state_dict(filled, strict=True, assign=True)
    except (TypeError, RuntimeError, NotImplementedError):  # no assign= (torch < 2.1), or a module's own loader
        return False
    return not any(t.is_meta for t in (*net.parameters(), *net.buffers()))


def load_network(build: Callable[[], Any], state: Mapping[str, Any],
                 fit: Callable[[Any, Mapping[str, Any]], Mapping[str, Any]] = lambda net, state: state):
    """The network ``build()`` makes, holding the tensors ``fit(net, state)`` returns (``fit`` adapts the state to
    the network and raises when it does not fit; by default the state is used as it is).

    The network is built on the meta device and given the tensors (:func:`build_empty`, :func:`fill_empty`): no
    random initialisation, which is most of the construction time and would be overwritten anyway; the result holds
    the same values as a normally built and loaded network. Where any of that fails, the network is built normally,
    ``fit`` runs again on it and its result is loaded with ``load_state_dict``: errors come from that path.
    """
    net = build_empty(build)
    if net is not None:
        try:
            fitted = fit(net, state)
        except Exception:  # noqa: BLE001 (the normal build below raises the real error, if there is one)
            fitted = None
        if fitted is not None and fill_empty(net, fitted):
            return net
    net = build()
    net.load_state_dict(fit(net, state), strict=True)
    return net


def key_differences(own: dict, state: dict) -> str | None:
    """How ``state`` differs from a network's own state dict (missing, unexpected, wrongly shaped keys, five of
    each named), or None when it fits exactly."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if not (missing or unexpected or wrong):
        return None

    def show(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

    return "; ".join(text for text in (
        f"{len(missing)} missing: {show(missing)}" if missing else "",
        f"{len(unexpected)} unexpected: {show(unexpected)}" if unexpected else "",
        f"{len(wrong)} wrong shape: " + show([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong])
        if wrong else "",
    ) if text)


def check_keys(net, state: dict, package: ModelPackage) -> None:
    """Raise a message naming missing, unexpected and wrongly shaped keys when ``state`` does not fit ``net``."""
    details = key_differences(net.state_dict(), state)
    if details is None:
        return
    a = package.architecture
    raise ModelPackageError(
        f"The weights in {package.weights_file.name} do not fit {a.framework} {a.arch} {a.encoder} with "
        f"{a.in_channels} input and {a.out_channels} output channels ({details}). The package describes another "
        "model than its weights."
    )


def fitting(package: ModelPackage) -> Callable[[Any, Mapping[str, Any]], Mapping[str, Any]]:
    """A ``fit`` for :func:`load_network`: the state as it is (its keys under the network's ``state_prefix``, if
    it has one: a wrapper such as :class:`models.torchvision_detectors.TorchvisionDetector`), after
    :func:`check_keys`."""

    def fit(net, state: Mapping[str, Any]) -> Mapping[str, Any]:
        prefix = getattr(net, "state_prefix", "")
        state = {f"{prefix}{k}": v for k, v in state.items()} if prefix else state
        check_keys(net, dict(state), package)
        return state

    return fit


def load_model(package: ModelPackage, verify: bool = True, trusted: bool = False):
    """The package's network with its weights loaded, in eval mode, on the CPU."""
    if verify:
        verify_weights(package)
    fmt = package.weights_format
    if fmt == "torchscript":
        return load_torchscript(package.weights_file).eval()
    if fmt == "pickled_module":
        module = load_pickled_module(package.weights_file, trusted)
        if package.architecture.framework != "torchvision":
            return module.eval()
        state = module.state_dict()  # a pickled torchvision detector: its weights into the contract's wrapper
    else:
        state = read_state_dict(package.weights_file, fmt)
    values = [c.value for c in package.classes]
    return load_network(lambda: build_network(package.architecture, values), state, fitting(package)).eval()
