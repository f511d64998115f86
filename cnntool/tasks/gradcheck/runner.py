"""`gradcheck(model, …)`: check a model's gradients, as a whole or one module at a time.

Everything runs on a float64 deep copy of the model in eval mode: float32 finite differences
cannot resolve a 1e-3 relative error, and the user's model must not change.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnntool.core.device import device_of, resolve_device
from cnntool.core.hooks import capture, module_hooks
from cnntool.core.layers import resolve_layer
from cnntool.core.loading.exported import refuse_torchscript
from cnntool.errors import CnnToolError, InputSizeError
from cnntool.tasks.gradcheck.numeric import CheckPlan, LossAt, check_tensor, tensor_generator
from cnntool.tasks.gradcheck.results import (
    INCONCLUSIVE,
    GradcheckResult,
    Skipped,
    TensorResult,
    Tolerances,
)

Objective = Callable[[], Tensor]  # the scalar loss at the current values of the checked tensors


def gradcheck(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch: int = 2,
    input: Tensor | None = None,
    layer: str | None = None,
    per_layer: bool = False,
    params: bool = True,
    inputs: bool = True,
    directions: int = 3,
    coordinates: int = 2,
    eps: float = 1e-6,
    rtol: float = 1e-3,
    atol: float = 1e-8,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: Callable[[TensorResult], None] | None = None,
) -> GradcheckResult:
    """Compare autograd's gradients with central finite differences; the model is not changed.

    Whole-model mode (default): one scalar loss, the cross-entropy of the model's logits on
    seeded random labels, or with `layer` (a module path or alias) a seeded random-weighted
    sum of that layer's output. Each parameter tensor (`params`) and the input (`inputs`) gets
    `directions` directional checks (the first along autograd's own gradient) and
    `coordinates` single-element checks, two forward passes each.
    `per_layer`: every leaf module (and every module owning parameters directly) is checked
    alone on the inputs it received in the real forward pass, with a random-weighted sum of
    its output as the loss, so that a failure names the module. A module called several times
    (ResNet's shared ReLU) is checked on its first call; keyword arguments are not recorded.
    The input is `input` (then `batch` and `input_shape` are not used), else
    (batch, *input_shape) standard-normal numbers from `seed`.
    `device`: where the float64 copy runs (default: where the model is).
    `progress` is called with each tensor's result as soon as it is known.
    """
    refuse_torchscript(model, "gradcheck perturbs a float64 copy of the model's parameters")
    tol = Tolerances(eps, rtol, atol)
    plan = CheckPlan(directions, coordinates)
    _validate(tol, plan, batch, layer, per_layer, params, inputs)
    target = _device_for(model, device)
    checked = _float64_copy(model, target)
    generator = torch.Generator().manual_seed(seed)
    if input is None:
        input = torch.randn((batch, *input_shape), generator=generator, dtype=torch.float64)
    x = input.detach().to(target, torch.float64).clone()
    _first_forward(checked, x)
    run = _Run(tol, plan, seed, progress)
    if per_layer:
        loss = "per module: a seeded random-weighted sum of its output"
        _check_each_module(checked, x, run, params=params, inputs=inputs, generator=generator)
    else:
        objective, loss = _model_objective(checked, x, layer, generator)
        tensors = ({"input": x} if inputs else {}) | (
            dict(checked.named_parameters()) if params else {}
        )
        run.check_objective(objective, tensors, module_of=_owner)
    return GradcheckResult(
        model=type(model).__name__,
        mode="per-layer" if per_layer else "model",
        loss=loss,
        input_shape=tuple(x.shape),
        dtype="float64",
        device=str(target),
        seed=seed,
        tolerances=tol,
        tensors=tuple(run.results),
        skipped=tuple(run.skipped),
        warnings=_warnings(run.results, tol),
    )


class _Run:
    """Collects per-tensor results and skipped tensors while objectives are checked."""

    def __init__(
        self,
        tol: Tolerances,
        plan: CheckPlan,
        seed: int,
        progress: Callable[[TensorResult], None] | None,
    ):
        self.tol, self.plan, self.seed, self.progress = tol, plan, seed, progress
        self.results: list[TensorResult] = []
        self.skipped: list[Skipped] = []

    def check_objective(
        self,
        objective: Objective,
        tensors: dict[str, Tensor],
        module_of: Callable[[str], tuple[str, str]],
    ) -> None:
        """Check dObjective/dTensor for each named tensor (moved in place, always restored)."""
        for tensor in tensors.values():
            tensor.requires_grad_(True)
        gradients = torch.autograd.grad(objective(), list(tensors.values()), allow_unused=True)
        loss_at: LossAt = torch.no_grad()(lambda: float(objective()))
        base_loss = loss_at()
        for (path, tensor), gradient in zip(tensors.items(), gradients, strict=True):
            if gradient is None:
                self.skipped.append(Skipped(path, "does not affect the loss"))
                continue
            checks = check_tensor(
                loss_at,
                base_loss,
                tensor,
                gradient,
                self.tol,
                self.plan,
                tensor_generator(self.seed, path),
            )
            module, name = module_of(path)
            result = TensorResult(module, name, tuple(tensor.shape), checks)
            self.results.append(result)
            if self.progress is not None:
                self.progress(result)


def _owner(path: str) -> tuple[str, str]:
    """'layer1.0.conv1.weight' -> ('layer1.0.conv1', 'weight'); 'input' -> ('', 'input')."""
    module, _, name = path.rpartition(".")
    return module, name


# --------------------------------------------------------------------------------------------
# whole model


def _model_objective(
    model: nn.Module, x: Tensor, layer: str | None, generator: torch.Generator
) -> tuple[Objective, str]:
    if layer is None:
        with torch.no_grad():
            logits = model(x.clone())
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise CnnToolError(
                f"the model returns {shape}, not (batch, classes) logits for a "
                "cross-entropy loss; choose a layer whose output to check with --layer"
            )
        labels = torch.randint(logits.shape[1], (logits.shape[0],), generator=generator)
        labels = labels.to(logits.device)
        # the model may work in place on its input; x itself must keep its values
        return (
            lambda: F.cross_entropy(model(x.clone()), labels),
            "cross-entropy of the logits on seeded random labels",
        )
    path, _ = resolve_layer(model, layer)

    def layer_output() -> Tensor:
        with capture(model, [path], detach=False, stop_early=True) as cap:
            cap.run(x.clone())
        return cap.outputs[path]

    with torch.no_grad():
        weights = _output_weights([layer_output()], generator)
    return (
        lambda: _weighted_sum([layer_output()], weights),
        f"seeded random-weighted sum of the output of {path}",
    )


# --------------------------------------------------------------------------------------------
# per layer


def _check_each_module(
    model: nn.Module,
    x: Tensor,
    run: _Run,
    *,
    params: bool,
    inputs: bool,
    generator: torch.Generator,
) -> None:
    # leaves, and modules owning parameters directly (the root too: a bare nn.Linear is one)
    modules = {
        name: m
        for name, m in model.named_modules()
        if not any(m.children()) or any(m.parameters(recurse=False))
    }
    seen = _inputs_seen(model, x, modules)
    for path, module in modules.items():
        if path not in seen:
            run.skipped.append(Skipped(path, "did not run in the forward pass"))
            continue
        args = seen[path]
        tensors = {}
        if inputs:
            floats = [
                i for i, a in enumerate(args) if isinstance(a, Tensor) and a.is_floating_point()
            ]
            tensors = {("input" if len(floats) == 1 else f"input[{i}]"): args[i] for i in floats}
        if params:
            tensors |= dict(module.named_parameters(recurse=False))
        if not tensors:
            run.skipped.append(Skipped(path, "no input or parameter to differentiate"))
            continue
        try:
            objective = _module_objective(module, args, tensors, generator)
        except Exception as exc:  # noqa: BLE001 - recorded as skipped, with its reason
            run.skipped.append(Skipped(path, f"cannot run alone: {type(exc).__name__}: {exc}"))
            continue
        run.check_objective(objective, tensors, module_of=lambda name, _p=path: (_p, name))


def _inputs_seen(model: nn.Module, x: Tensor, modules: dict[str, nn.Module]) -> dict[str, tuple]:
    """The positional arguments of each module's first call in one real forward pass (cloned
    before the module runs, so an in-place ReLU cannot overwrite them)."""
    seen: dict[str, tuple] = {}

    def keep(name: str, _module: nn.Module, args: tuple) -> None:
        if name not in seen:
            seen[name] = tuple(a.detach().clone() if isinstance(a, Tensor) else a for a in args)

    with torch.no_grad(), module_hooks(modules, pre=keep):
        model(x.clone())
    return seen


def _module_objective(
    module: nn.Module, args: tuple, tensors: dict[str, Tensor], generator: torch.Generator
) -> Objective:
    checked_args = {id(t) for t in tensors.values()}

    def outputs() -> list[Tensor]:
        # clones: an in-place module must not overwrite the tensors being checked
        out = module(*(a.clone() if id(a) in checked_args else a for a in args))
        parts = list(out) if isinstance(out, (tuple, list)) else [out]
        if not all(isinstance(p, Tensor) for p in parts):
            raise TypeError(f"it returns a {type(out).__name__}, not tensors")
        return [p for p in parts if p.is_floating_point()]

    with torch.no_grad():
        weights = _output_weights(outputs(), generator)
    return lambda: _weighted_sum(outputs(), weights)


# --------------------------------------------------------------------------------------------
# shared pieces


def _output_weights(outputs: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    """Seeded normal weights, scaled so that the weighted sum is about one output's size.

    Not a plain sum: that can have a zero gradient by symmetry (a softmax sums to 1), and a
    random projection keeps every output element's gradient in play.
    """
    total = sum(o.numel() for o in outputs)
    return [
        (torch.randn(o.shape, generator=generator) / math.sqrt(max(total, 1))).to(o.device, o.dtype)
        for o in outputs
    ]


def _weighted_sum(outputs: list[Tensor], weights: list[Tensor]) -> Tensor:
    return sum((o * w).sum() for o, w in zip(outputs, weights, strict=True))


def _float64_copy(model: nn.Module, device: torch.device) -> nn.Module:
    try:
        checked = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001 - any failure to copy is one user-facing sentence
        raise CnnToolError(
            f"cannot copy the model to check it without changing it: {type(exc).__name__}: {exc}"
        ) from exc
    checked = checked.to(device=device, dtype=torch.float64).eval()
    checked.requires_grad_(False)  # the tensors being checked switch theirs on
    return checked


def _device_for(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is None:
        target = device_of(model)
    else:
        target = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if target.type == "mps":
        raise CnnToolError("MPS has no float64, which finite differences need; use --device cpu")
    return target


def _first_forward(model: nn.Module, x: Tensor) -> None:
    """Fail with one sentence when the model cannot run on the input at all."""
    try:
        with torch.no_grad():
            model(x.clone())
    except RuntimeError as exc:
        raise InputSizeError(
            f"the model cannot run on a {'×'.join(map(str, x.shape))} input: "
            f"{str(exc).splitlines()[0]}"
        ) from exc


def _validate(
    tol: Tolerances,
    plan: CheckPlan,
    batch: int,
    layer: str | None,
    per_layer: bool,
    params: bool,
    inputs: bool,
) -> None:
    if not (tol.eps > 0 and tol.rtol >= 0 and tol.atol >= 0):
        raise CnnToolError("eps must be positive and rtol, atol not negative")
    if plan.directions < 0 or plan.coordinates < 0 or plan.directions + plan.coordinates == 0:
        raise CnnToolError("ask for at least one direction or coordinate check per tensor")
    if batch < 1:
        raise CnnToolError("the batch needs at least one input")
    if not (params or inputs):
        raise CnnToolError("nothing to check: both parameters and inputs are left out")
    if layer is not None and per_layer:
        raise CnnToolError(
            "a layer chooses the loss of the whole-model check; per-layer mode "
            "gives every module its own loss, so use one or the other"
        )


def _warnings(results: list[TensorResult], tol: Tolerances) -> tuple[str, ...]:
    warnings = []
    checks = [c for r in results for c in r.checks]
    rounding = sum(c.reason == "rounding" for c in checks)
    if rounding:
        warnings.append(
            f"{rounding} of {len(checks)} checks were lost in float64 rounding "
            f"noise (the loss barely changed): eps {tol.eps:g} is too small for "
            "this loss; try a larger eps such as 1e-5"
        )
    elif tol.eps < 1e-9:
        warnings.append(
            f"eps {tol.eps:g} is very small: float64 differences of the loss lose "
            "most of their digits to cancellation"
        )
    if tol.eps > 1e-3:
        warnings.append(
            f"eps {tol.eps:g} is large: the central difference's truncation error "
            "and the kinks it crosses grow with it"
        )
    undecided = [r.path for r in results if r.verdict == INCONCLUSIVE]
    if undecided:
        shown = ", ".join(undecided[:5]) + (", …" if len(undecided) > 5 else "")
        warnings.append(
            f"{len(undecided)} tensor(s) could not be checked conclusively (every "
            f"draw crossed a kink or was lost in rounding): {shown}"
        )
    return tuple(warnings)
