"""What a gradient check found: tolerances, single comparisons, per-tensor and overall verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class Tolerances:
    """Central differences with step `eps`; a comparison passes when
    |autograd − numeric| ≤ atol + rtol · max(|autograd|, |numeric|).

    rtol is torch.autograd.gradcheck's 1e-3. atol is much tighter than its 1e-5 because we
    compare directional derivatives along unit directions of large tensors, which are often
    smaller than 1e-5 themselves: with atol 1e-5 a 1% error in them would pass unseen.
    Rounding noise that a tight atol would otherwise flag is caught as inconclusive instead.
    """

    eps: float = 1e-6
    rtol: float = 1e-3
    atol: float = 1e-8

    def allowed(self, analytic: float, numeric: float) -> float:
        return self.atol + self.rtol * max(abs(analytic), abs(numeric))

    def describe(self) -> str:
        return (
            f"eps {self.eps:g}; pass if |autograd − numeric| ≤ {self.atol:g} + "
            f"{self.rtol:g}·max(|autograd|, |numeric|)"
        )


@dataclass(frozen=True)
class Check:
    """One comparison of autograd's directional derivative with a central difference.

    kind: "gradient" (along autograd's own gradient: the largest signal), "random" (a dense
    random unit direction), "sparse" (a random direction on a random subset of the elements,
    drawn after an inconclusive check) or "coordinate" (one element, `index` into the
    flattened tensor). reason, for an inconclusive check: "kink" (the two one-sided
    differences disagree, or the error did not persist at eps/10: the step crossed a ReLU,
    max-pool or other non-differentiable point) or "rounding" (the loss barely changed, so the
    difference is float64 rounding noise: eps is too small).
    """

    kind: str
    analytic: float
    numeric: float
    verdict: str
    reason: str = ""
    index: int | None = None

    @property
    def abs_err(self) -> float:
        return abs(self.analytic - self.numeric)

    @property
    def rel_err(self) -> float:
        scale = max(abs(self.analytic), abs(self.numeric))
        return self.abs_err / scale if scale > 0 else 0.0


@dataclass(frozen=True)
class TensorResult:
    """Every check of one tensor: a parameter, or the input of the model or of a module.

    module: the module path the tensor belongs to ("" for the whole model's input);
    name: "weight", "bias", … or "input" ("input[1]" for a module's second argument).
    verdict: "fail" if any check failed, else "pass" if any passed, else "inconclusive".
    The error maxima are over the conclusive checks (None when there is none).
    """

    module: str
    name: str
    shape: tuple[int, ...]
    checks: tuple[Check, ...]

    @property
    def path(self) -> str:
        return f"{self.module}.{self.name}" if self.module else self.name

    def count(self, verdict: str) -> int:
        return sum(check.verdict == verdict for check in self.checks)

    @property
    def verdict(self) -> str:
        if self.count(FAIL):
            return FAIL
        return PASS if self.count(PASS) else INCONCLUSIVE

    def _conclusive(self) -> list[Check]:
        return [c for c in self.checks if c.verdict != INCONCLUSIVE]

    @property
    def max_rel_err(self) -> float | None:
        return max((c.rel_err for c in self._conclusive()), default=None)

    @property
    def max_abs_err(self) -> float | None:
        return max((c.abs_err for c in self._conclusive()), default=None)

    @property
    def worst(self) -> Check | None:
        """The failed check with the largest error, else the conclusive one with the largest."""
        pool = [c for c in self.checks if c.verdict == FAIL] or self._conclusive()
        return max(pool, key=lambda c: c.rel_err, default=None)

    def to_record(self) -> dict[str, Any]:
        worst = self.worst
        return {
            "module": self.module,
            "tensor": self.name,
            "shape": list(self.shape),
            "verdict": self.verdict,
            "checks": len(self.checks),
            "passed": self.count(PASS),
            "failed": self.count(FAIL),
            "inconclusive": self.count(INCONCLUSIVE),
            "kinks": sum(c.reason == "kink" for c in self.checks),
            "max_rel_err": self.max_rel_err,
            "max_abs_err": self.max_abs_err,
            "worst": None
            if worst is None
            else {
                "kind": worst.kind,
                "index": worst.index,
                "autograd": worst.analytic,
                "numeric": worst.numeric,
            },
        }


@dataclass(frozen=True)
class Skipped:
    """A tensor or module that was not checked, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class GradcheckResult:
    """All per-tensor results of one run, with the set-up needed to reproduce it."""

    model: str
    mode: str  # "model": one scalar loss of the whole model; "per-layer": each module alone
    loss: str  # what was differentiated, in words
    input_shape: tuple[int, ...]  # including the batch dimension
    dtype: str  # always "float64": a copy of the model is cast, the model itself is untouched
    device: str
    seed: int
    tolerances: Tolerances
    tensors: tuple[TensorResult, ...]
    skipped: tuple[Skipped, ...]
    warnings: tuple[str, ...]

    @property
    def failures(self) -> tuple[TensorResult, ...]:
        return tuple(t for t in self.tensors if t.verdict == FAIL)

    @property
    def ok(self) -> bool:
        """No gradient was found wrong (inconclusive tensors do not count as wrong)."""
        return not self.failures

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per checked tensor, each with the run's mode and tolerances."""
        tol = self.tolerances
        common = {"mode": self.mode, "eps": tol.eps, "rtol": tol.rtol, "atol": tol.atol}
        return [{**t.to_record(), **common} for t in self.tensors]
