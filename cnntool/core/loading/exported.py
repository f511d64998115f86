"""Compiled models: TorchScript archives and torch.export programs (`.pt2`), what each can do.

Both are graphs recorded from a Python module, and both run their forward pass (and give input
gradients) as the module did. What they lose differs:

- TorchScript (`torch.jit.save`): torch refuses hooks on a ScriptModule, and cnntool's Python
  interception (guided backprop's rectifier rule) never sees inside its code. So the commands
  that need only the forward pass work (`FORWARD_ONLY`); those that look at named layers need
  the Python module, and say so in one sentence (`NeedsPythonModule`).
- torch.export (`torch.export.save`): loaded with `torch.export.load` and unflattened
  (`torch.export.unflatten`) into modules with the original module paths, so hooks on named
  layers work. Its layers are InterpreterModules, though: their types (Conv2d, Linear,
  BatchNorm2d) are gone, so commands that pick layers by type (filters, a BatchNorm fold, the
  default layers of diagnose and microscope) need the layers named or the Python module. Its
  graph calls aten operators, which guided backprop and deconvnet cannot intercept.
  A program exported without a dynamic batch dimension takes batches of exactly its size:
  larger batches are split into pieces of that size for the forward pass, which is fine for
  predict and attack but not for hooks (a hooked layer would run once per piece), so a hooked
  forward of another batch size is refused with the two fixes.
"""

from __future__ import annotations

import functools
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cnntool.errors import CnnToolError, ModelLoadError, first_line

if TYPE_CHECKING:
    from torch import nn

ModuleT = TypeVar("ModuleT", bound="nn.Module")

# What works on the forward pass alone (and input gradients), for TorchScript.
FORWARD_ONLY = (
    "predict, attack, layers, profile's totals, occlusion maps of a class, deconv's saliency "
    "and ig, maximize --class"
)
_PYTHON_MODULE = (
    "give the Python module instead (FILE.py:NAME --weights FILE, or a state dict --arch NAME)"
)


class NeedsPythonModule(CnnToolError):
    """A command that needs what a compiled model (TorchScript, torch.export) no longer has."""


# --- telling the formats apart ----------------------------------------------------------------


def is_torchscript(module) -> bool:
    import torch

    return isinstance(module, torch.jit.ScriptModule)


def is_exported(module) -> bool:
    """A module unflattened from a torch.export program (or one of its submodules)."""
    from torch.export.unflatten import InterpreterModule, UnflattenedModule

    return isinstance(module, (InterpreterModule, UnflattenedModule))


def contains_exported(model) -> bool:
    from torch.export.unflatten import InterpreterModule, UnflattenedModule

    kinds = (InterpreterModule, UnflattenedModule)  # imported once, not once per module
    return any(isinstance(module, kinds) for module in model.modules())


def is_exported_program(path: Path) -> bool:
    """A `torch.export.save` archive: a zip holding `…/models/*.json` and `archive_format`."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("archive_format") for n in names) and any(
        "/models/" in n and n.endswith(".json") for n in names
    )


# --- what cannot be done, in one sentence -------------------------------------------------------


def refuse_hooks(module) -> None:
    """Raise the one sentence when hooks cannot be registered on `module` (TorchScript)."""
    refuse_torchscript(module, "this command hooks the model's named layers")


def refuse_layers(model) -> None:
    """Raise the one sentence when `model`'s layers cannot be looked up and hooked."""
    refuse_hooks(model)


def refuse_torchscript(model, what: str) -> None:
    """Raise "`what`, which TorchScript does not allow (…what works…); <the fix>" for a
    TorchScript model."""
    if is_torchscript(model):
        raise NeedsPythonModule(
            f"{what}, which TorchScript does not allow (a TorchScript archive runs "
            f"{FORWARD_ONLY}); {_PYTHON_MODULE}, or a torch.export .pt2"
        )


def refuse_interception(model, what: str) -> None:
    """Raise when `what` (guided backprop, deconvnet) needs to intercept the Python calls of
    the model's activations, which compiled graphs do not make."""
    if is_torchscript(model):
        kind = "a TorchScript archive runs its own code"
    elif contains_exported(model):
        kind = "an exported program calls aten operators"
    else:
        return
    raise NeedsPythonModule(
        f"{what} reroutes each ReLU's gradient by intercepting the model's Python calls, and "
        f"{kind}: use saliency or ig instead, or {_PYTHON_MODULE}"
    )


def refuse_untyped(model, what: str) -> None:
    """Raise when `what` needs real nn.Conv2d / BatchNorm2d modules and `model` is an exported
    program (whose layers are graph pieces named after their modules)."""
    if contains_exported(model):
        raise NeedsPythonModule(
            f"{what}, and an exported program's layers are graph pieces without them; "
            f"{_PYTHON_MODULE}"
        )


def untyped_layers_hint(model) -> str:
    """'; …' to append to "the model has no convolution" when the model's layers lost their
    types (an exported program), else ''."""
    if contains_exported(model):
        return (
            " (an exported program's layers are graph pieces, not Conv2d or Linear modules, "
            f"so none is found by its type; or {_PYTHON_MODULE})"
        )
    return ""


# --- loading a torch.export program --------------------------------------------------------------


@dataclass
class ExportedProgram:
    """An unflattened torch.export program, and what its input signature says."""

    module: Any  # nn.Module whose forward returns the logits tensor
    input_size: tuple[int, int, int] | None  # (C, H, W) when the program fixes them
    size_source: str | None  # "the exported program's input", "… example input"
    batch: int | None  # the one batch size the program takes; None: any
    notes: list[str] = field(default_factory=list)


def load_exported_program(path: Path) -> ExportedProgram:
    """`torch.export.load` a `.pt2`, unflattened so that its layers keep their module paths."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
    except Exception as exc:  # noqa: BLE001 - torch raises anything for a damaged archive
        raise ModelLoadError(
            f"cannot load the exported program {path}: {first_line(exc)}"
        ) from None
    name, shape = _image_input(program, path)
    notes: list[str] = []
    module: nn.Module
    try:
        module = torch.export.unflatten(program)
    except Exception as exc:  # noqa: BLE001 - then only the flat graph is left
        module = program.module()
        notes.append(
            f"{path} could not be unflattened ({first_line(exc)}): its layers have no names, "
            f"so only what needs no layer works ({FORWARD_ONLY})"
        )
    _name_layer_types(module, program)
    _drop_fake_values(module)
    batch = shape[0]
    if batch is not None:
        notes.append(
            f"{path} was exported for batches of exactly {batch} (no dynamic batch dimension): "
            f"batches are split into pieces of {batch} for the forward pass; commands that look "
            f"inside named layers need --batch-size {batch}, or a program exported with "
            f"dynamic_shapes={{'{name}': {{0: torch.export.Dim('batch')}}}}"
        )
    # functools.cache takes a class (hashable), though mypy says not: mypy#11470
    module.__class__ = _exported_class(type(module))  # type: ignore[arg-type]
    module._cnntool_batch = batch
    module._cnntool_input_name = name
    channels, height, width = shape[1:]
    size: tuple[int, int, int] | None = None
    source: str | None = None
    if channels is not None and height is not None and width is not None:
        size, source = (channels, height, width), "the exported program's input"
    else:
        example = _example_shape(program)
        if example is not None:
            size, source = example, "the exported program's example input"
    return ExportedProgram(module, size, source, batch, notes)


def _image_input(program, path: Path) -> tuple[str, tuple[int | None, ...]]:
    """(name, N×C×H×W with None for each dynamic dimension) of the program's one input."""
    signature = program.graph_signature
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    inputs = [name for name in signature.user_inputs if name in placeholders]
    if len(inputs) != 1:
        raise ModelLoadError(
            f"the exported program {path} takes {len(inputs)} inputs; cnntool feeds a model "
            "one batch of images (N×C×H×W)"
        )
    value = placeholders[inputs[0]].meta.get("val")
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) != 4:
        given = "a non-tensor" if shape is None else f"a {len(shape)}-D tensor"
        raise ModelLoadError(
            f"the exported program {path} takes {given}; cnntool feeds images as N×C×H×W"
        )
    return inputs[0], tuple(int(d) if isinstance(d, int) else None for d in shape)


def _name_layer_types(module, program) -> None:
    """Give each unflattened layer a class named after the module it was (`Conv2d`, `Linear`),
    from the graph's nn_module_stack: tables then show those types, and name-based aliases
    (`logits`, `penultimate`) find the classifier. They stay InterpreterModules (no `weight`
    attribute, not an nn.Conv2d), so nothing mistakes them for the real modules."""
    from torch.export.unflatten import InterpreterModule

    types: dict[str, str] = {}
    for node in program.graph.nodes:
        for path, kind in (node.meta.get("nn_module_stack") or {}).values():
            if isinstance(path, str) and isinstance(kind, str):
                types.setdefault(path, kind.rpartition(".")[2])
    for path, child in module.named_modules():
        kind = types.get(path)
        if path and kind and type(child) is InterpreterModule and kind.isidentifier():
            child.__class__ = _typed_class(kind)


def _drop_fake_values(module) -> None:
    """Remove the FakeTensors that export leaves in every graph node's meta: the interpreter
    never reads them, and copying the model (profile, gradcheck) would copy each one and make
    torch warn about their data pointers."""
    for child in module.modules():
        graph = getattr(child, "graph", None)
        for node in getattr(graph, "nodes", ()):
            for key in ("val", "example_value", "tensor_meta"):
                node.meta.pop(key, None)


@functools.cache
def _typed_class(kind: str) -> type:
    from torch.export.unflatten import InterpreterModule

    doc = f"An exported {kind}: its graph, run by torch.export's InterpreterModule."
    return type(kind, (InterpreterModule,), {"__doc__": doc, "__module__": __name__})


def _example_shape(program) -> tuple[int, int, int] | None:
    example = getattr(program, "example_inputs", None)
    if example is None:
        return None
    try:
        channels, height, width = example[0][0].shape[1:]
        return int(channels), int(height), int(width)
    except (TypeError, IndexError, AttributeError, ValueError):
        return None


@functools.cache
def _exported_class(base: type[ModuleT]) -> type[ModuleT]:
    """`base` (torch's UnflattenedModule) with a forward that returns the logits tensor and
    feeds a fixed-batch program pieces of its size. A subclass, not a wrapper, so every module
    path stays the program's own."""

    def forward(self, x, *args, **kwargs):
        from cnntool.core.logits import main_output

        size = getattr(self, "_cnntool_batch", None)
        if size is None or x.shape[0] == size:
            return main_output(base.forward(self, x, *args, **kwargs))
        if _hooked(self):
            name = getattr(self, "_cnntool_input_name", "x")
            raise NeedsPythonModule(
                f"the exported program takes batches of exactly {size} and got {x.shape[0]}: "
                f"splitting the batch would show each hooked layer one piece at a time; run with "
                f"--batch-size {size}, or export with dynamic_shapes={{'{name}': {{0: "
                "torch.export.Dim('batch')}}"
            )
        import torch

        pieces = []
        for start in range(0, x.shape[0], size):
            piece = x[start : start + size]
            missing = size - piece.shape[0]
            if missing:  # the last piece is padded with zeros, and their outputs dropped
                piece = torch.cat([piece, piece.new_zeros((missing, *piece.shape[1:]))])
            output = main_output(base.forward(self, piece, *args, **kwargs))
            pieces.append(output[: size - missing])
        return torch.cat(pieces)

    return type("ExportedProgram", (base,), {"forward": forward, "__module__": __name__})


def _hooked(model) -> bool:
    """Whether any submodule (not the root) has a forward hook registered."""
    return any(
        module._forward_hooks or module._forward_pre_hooks
        for name, module in model.named_modules()
        if name
    )
