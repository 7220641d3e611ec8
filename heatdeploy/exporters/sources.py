"""Where a torch model comes from: the shipped reference, a torch.export ``.pt2``, or ``module:factory``.

Every failure is a one-line SourceError naming the file or module and the fix, because this is the first
thing a user's ``heatdeploy export`` touches and tracebacks from deep inside torch do not say what to do.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heatdeploy.errors import HeatdeployError
from heatdeploy.errortext import first_line
from heatdeploy.spec import ModelSpec

if TYPE_CHECKING:
    import torch

_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
MODEL_HELP = "expected 'reference', a torch.export file (.pt2) or package.module:factory"


class SourceError(HeatdeployError, ValueError):
    """The model (or its weights / spec) cannot be loaded; the message names the thing and the fix."""


def load_torch_model(
    model: str, *, weights: str | None = None, spec_path: str | None = None
) -> tuple[torch.nn.Module, ModelSpec]:
    """Load MODEL and its spec; the module comes back in eval mode where it allows that.

    - ``reference``: ``load_reference(weights)``: the reference model and its spec (``spec_path`` overrides).
    - ``path.pt2``: ``torch.export.load(path).module()``; it carries its weights; ``spec_path`` is required.
    - ``package.module:factory``: ``factory()`` builds the module; ``weights`` (a state_dict, or a dict with
      a ``state_dict`` / ``model`` entry) is loaded strictly; the spec comes from ``spec_path``, else a
      ``spec`` attribute or ``heatdeploy_spec()`` method on the module.
    A spec file that is wrong raises SpecError (a ValueError too), naming the field.
    """
    if model == "reference":
        module, spec = _load_reference(weights)
        weights = None  # load_reference() took them
    elif model.endswith(".pt2"):
        if weights is not None:
            raise SourceError(f"{model}: a .pt2 program carries its own weights; drop --weights")
        module = _load_pt2(Path(model))
        if spec_path is None:
            raise SourceError(f"{model}: a .pt2 carries no heatdeploy spec; pass --spec SPEC.json "
                              "(see heatdeploy/spec.py for the fields)")
        spec = None
    elif _FACTORY_RE.match(model):
        module = _load_factory(model)
        spec = None
    else:
        raise SourceError(_unrecognised(model))

    if weights is not None:
        _load_weights(module, Path(weights))
    if spec_path is not None:
        spec = ModelSpec.load(spec_path)
    elif spec is None:
        spec = _spec_from_module(module, model)
    try:
        module.eval()
    except NotImplementedError:  # torch.export modules refuse train()/eval(); their graph is inference-only
        pass
    return module, spec.validate()


def _unrecognised(model: str) -> str:
    p = Path(model)
    if p.suffix == ".onnx":
        return f"{model}: this is already ONNX; pass it to the ONNX steps directly instead of a torch MODEL"
    if p.suffix == ".tflite":
        return (f"{model}: a TFLite model, not a torch one; export it with 'heatdeploy export {model} --spec SPEC.json "
                "--format openvino|onnx'")
    if p.suffix in (".pt", ".pth", ".ckpt", ".bin", ".safetensors"):
        return (f"{model}: a {p.suffix} file holds weights, not a model; pass MODULE:FACTORY with --weights "
                f"{model}, or save the model with torch.export.save(...) as .pt2")
    return f"unrecognised MODEL {model!r}: {MODEL_HELP}"


def _load_reference(weights: str | None) -> tuple[torch.nn.Module, ModelSpec]:
    try:
        from heatdeploy.models.reference import load_reference
    except ImportError as exc:
        raise SourceError(f"MODEL 'reference': the reference model cannot be imported ({exc}); reinstall "
                          "heatdeploy with its model files (pip install 'heatdeploy[export]')") from None
    if weights is not None and not Path(weights).is_file():
        raise SourceError(f"{weights}: no such weights file; check --weights")
    try:
        module, spec = load_reference() if weights is None else load_reference(weights)
    except FileNotFoundError as exc:  # its message already says how to get the weights
        raise SourceError(f"MODEL 'reference': {first_line(exc, 300)}") from None
    except Exception as exc:
        where = weights or "the shipped reference weights"
        raise SourceError(f"MODEL 'reference': cannot load {where} ({type(exc).__name__}: "
                          f"{first_line(exc, 300)}); pass weights trained for the reference model") from None
    return module, spec


def _load_pt2(path: Path) -> torch.nn.Module:
    import torch

    if not path.is_file():
        raise SourceError(f"{path}: no such .pt2 file; check the path (save one with torch.export.save)")
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise SourceError(f"{path}: cannot load the torch.export program ({first_line(exc, 300)}); re-save it "
                          f"with torch.export.save using torch {torch.__version__}") from None
    try:
        return program.module()
    except Exception as exc:
        raise SourceError(f"{path}: the torch.export program cannot be turned into a module "
                          f"({first_line(exc, 300)}); re-export it with torch.export.export") from None


def _load_factory(ref: str) -> torch.nn.Module:
    import torch

    mod_name, attr_path = ref.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name and (mod_name == exc.name or mod_name.startswith(exc.name + ".")):
            raise SourceError(f"{ref}: no module named {exc.name!r}; install it or add the folder that "
                              "contains it to PYTHONPATH") from None
        raise SourceError(f"{ref}: importing {mod_name!r} failed because it needs {exc.name!r}; install "
                          "that package") from None
    except Exception as exc:
        raise SourceError(f"{ref}: importing {mod_name!r} raised {type(exc).__name__}: {first_line(exc, 300)}; "
                          "fix the module") from None
    obj: Any = mod
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise SourceError(f"{ref}: module {mod_name!r} has no attribute {attr_path!r}; name the function "
                              "that builds the model after the ':'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SourceError(f"{ref}: {attr_path!r} is a {type(obj).__name__}, not callable; name a function or "
                          "class that returns a torch.nn.Module")
    try:
        module = obj()
    except Exception as exc:
        raise SourceError(f"{ref}: calling {attr_path}() raised {type(exc).__name__}: {first_line(exc, 300)}; "
                          "the factory must build the model with no arguments") from None
    if not isinstance(module, torch.nn.Module):
        raise SourceError(f"{ref}: {attr_path}() returned {type(module).__name__}, not a torch.nn.Module")
    return module


def _load_weights(module: torch.nn.Module, path: Path) -> None:
    """Strictly load a state_dict file (also ``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints)."""
    import torch

    if not path.is_file():
        raise SourceError(f"{path}: no such weights file; check --weights")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SourceError(f"{path}: cannot read the weights ({first_line(exc, 300)}); save them with "
                          "torch.save(model.state_dict(), path)") from None
    state = obj
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                state = obj[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SourceError(f"{path}: not a state_dict (expected a dict of tensors, or one under 'state_dict' "
                          "or 'model'); save them with torch.save(model.state_dict(), path)")
    state = dict(state)
    own = module.state_dict()
    prefix = "module."  # saved from DataParallel / DDP
    if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
        state = {k[len(prefix):]: v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise SourceError(f"{path}: weights do not fit the model: {'; '.join(parts)}; pass the weights "
                          "saved from this architecture")
    wrong = [f"{k} {list(v.shape)} vs model {list(own[k].shape)}" for k, v in state.items()
             if v.shape != own[k].shape]
    if wrong:
        raise SourceError(f"{path}: weights do not fit the model: {len(wrong)} shape mismatch(es) "
                          f"(e.g. {'; '.join(wrong[:3])}); pass the weights saved from this architecture")
    try:
        module.load_state_dict(state, strict=True)
    except Exception as exc:
        raise SourceError(f"{path}: weights do not fit the model ({first_line(exc, 300)})") from None


def _spec_from_module(module: torch.nn.Module, model: str) -> ModelSpec:
    """A ``heatdeploy_spec()`` method or ``spec`` attribute (ModelSpec or dict) on the module."""
    fn = getattr(module, "heatdeploy_spec", None)
    if callable(fn):
        try:
            found: Any = fn()
        except Exception as exc:
            raise SourceError(f"{model}: heatdeploy_spec() raised {type(exc).__name__}: {first_line(exc, 300)}; "
                              "fix it or pass --spec SPEC.json") from None
    else:
        found = getattr(module, "spec", None)  # anything else named 'spec' (a submodule?) is not ours
    if isinstance(found, ModelSpec):
        return found
    if isinstance(found, Mapping):
        return ModelSpec.from_dict(dict(found), f"{model}: spec")
    raise SourceError(f"{model}: no spec for this model; pass --spec SPEC.json, or give the module a 'spec' "
                      "attribute or a heatdeploy_spec() method returning a ModelSpec")


