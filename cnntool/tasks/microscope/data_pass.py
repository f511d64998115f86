"""The microscope's one pass over DATA: every consumer that needs the data shares each batch's
forward (core.session), and their states can be saved (resume) and merged across ranks.

Per batch, at once:
- per layer with a page: the top-K hits of each unit shown (tasks.top_patches) and the units'
  activation histograms (histogram.py);
- diagnose's running statistics at every such layer (tasks.diagnose: moments, correlation,
  dead/constant/saturated counts);
- the penultimate layer's features for the map (tasks.features, spooled to a file beside the
  site so that a resumed scan keeps the rows it already has);
- the top-1 prediction of every image, with its label mapped onto the model's classes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnntool.core.session import ScanSession
from cnntool.errors import CnnToolError
from cnntool.tasks.diagnose import RunningStats, StatsConsumer, merge_states
from cnntool.tasks.features import FeatureConsumer, FeatureSpool, assemble
from cnntool.tasks.microscope.histogram import (
    BINS,
    HistogramConsumer,
    UnitHistograms,
    merged_histograms,
)
from cnntool.tasks.microscope.plan import MicroscopePlan
from cnntool.tasks.predict import PredictionConsumer
from cnntool.tasks.top_patches import TopK, TopPatchConsumer, merged


class KeptSpool(FeatureSpool):
    """A FeatureSpool at a fixed path that outlives the process: a resumed scan truncates it to
    the rows its state recorded and appends from there (rows written after the last save are
    dropped). A spool shorter than its state says, or gone, is refused: never zero-filled. The
    command deletes it when done."""

    def __init__(self, path: str | Path, saved: dict | None = None):
        from cnntool.io.scratch import open_fixed  # never through a link planted at the name

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        reuse = saved is not None
        saved = saved or {}
        self.indices = list(saved.get("indices", ()))
        self.width = saved.get("width")
        self.nonfinite = list(saved.get("nonfinite", ()))
        self._check_saved_rows()
        self._file = os.fdopen(open_fixed(self.path, reuse=reuse), "r+b")
        self._file.truncate(4 * len(self.indices) * (self.width or 0))
        self._file.seek(0, os.SEEK_END)

    def _check_saved_rows(self) -> None:
        """The saved rows must all be in the file: a missing or short spool (deleted, or cut
        short by a full disk) would resume with rows of zeros in the map."""
        expected = 4 * len(self.indices) * (self.width or 0)
        if not expected:
            return
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            raise CnnToolError(
                f"the resume state's features ({len(self.indices)} rows) were in "
                f"{self.path}, which is gone; drop --resume to start afresh"
            ) from None
        if size < expected:
            raise CnnToolError(
                f"{self.path} holds {size:,} bytes where the resume state says "
                f"{expected:,} were written ({len(self.indices)} rows of "
                f"{self.width} features); drop --resume to start afresh"
            )

    def state_dict(self) -> dict:
        """What a resume needs: the rows so far (flushed to the file first)."""
        self._file.flush()
        return {
            "indices": list(self.indices),
            "width": self.width,
            "nonfinite": list(self.nonfinite),
        }

    def close(self) -> None:  # keep the file: the state refers to it
        if not self._file.closed:
            self._file.close()


class PredictionLog:
    """Each image's top-1 class, its probability, and its label as a class index (-1: none),
    kept as small integer lists (gathered across ranks; saved for resume)."""

    def __init__(self, saved: dict | None = None):
        saved = saved or {}
        self.index = list(saved.get("index", ()))
        self.predicted = list(saved.get("predicted", ()))
        self.probability = list(saved.get("probability", ()))
        self.label = list(saved.get("label", ()))
        self.finite = list(saved.get("finite", (True,) * len(self.index)))

    def add(self, predictions) -> None:
        for p in predictions:
            self.index.append(p.index)
            self.predicted.append(p.classes[0].index)
            self.probability.append(p.classes[0].prob)
            self.label.append(-1 if p.label_index is None else p.label_index)
            self.finite.append(p.finite)

    def state_dict(self) -> dict:
        return {
            "index": self.index,
            "predicted": self.predicted,
            "probability": self.probability,
            "label": self.label,
            "finite": self.finite,
        }


@dataclass(frozen=True)
class Predictions:
    """Every rank's predictions, in dataset order: arrays of the same length."""

    index: np.ndarray
    predicted: np.ndarray
    probability: np.ndarray
    label: np.ndarray  # -1: no label the model knows
    finite: np.ndarray | None = None  # bool: the logits were finite (None: all were)

    @property
    def labelled(self) -> int:
        return int((self.label >= 0).sum())

    @property
    def nonfinite(self) -> int:
        """Images whose logits held NaN or inf: never counted correct."""
        return 0 if self.finite is None else int((~self.finite).sum())

    @property
    def correct(self) -> int:
        right = (self.label >= 0) & (self.predicted == self.label)
        return int((right if self.finite is None else right & self.finite).sum())

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @classmethod
    def merged(cls, parts: Sequence[dict]) -> Predictions:
        columns = {
            key: np.concatenate([np.asarray(p[key]) for p in parts]) if parts else np.zeros(0)
            for key in ("index", "predicted", "probability", "label", "finite")
        }
        order = np.argsort(columns["index"], kind="stable")
        return cls(
            index=columns["index"][order].astype(np.int64),
            predicted=columns["predicted"][order].astype(np.int64),
            probability=columns["probability"][order].astype(np.float64),
            label=columns["label"][order].astype(np.int64),
            finite=columns["finite"][order].astype(bool),
        )


@dataclass(frozen=True)
class ScanResult:
    """The merged scan on rank 0: per layer its TopK and histograms, diagnose's statistics by
    measured module, the map's features (rows in dataset order, `feature_indices` their dataset
    indices, `nonfinite` those with NaN/inf) and the predictions."""

    topk: dict[str, TopK | None]
    histograms: dict[str, UnitHistograms | None]
    stats: dict[str, RunningStats]
    features: np.ndarray
    feature_indices: tuple[int, ...]
    nonfinite: tuple[int, ...]
    predictions: Predictions
    images: int


class MicroscopeScan:
    """The consumers of the one pass, built from `plan` (and from a saved `state` to resume).
    `spool` receives the penultimate features (a KeptSpool beside the site)."""

    def __init__(
        self,
        plan: MicroscopePlan,
        model,
        dataset,
        spool: FeatureSpool,
        *,
        state: dict | None = None,
        correlation: bool = True,
        bins: int = BINS,
    ):
        state = state or {}
        self.plan = plan
        device = getattr(model, "device", None)
        saved_topk = state.get("topk", {})
        saved_hist = state.get("histograms", {})
        self.patches = {
            layer.name: TopPatchConsumer(
                layer.name,
                units=layer.units,
                top=plan.top,
                state=_restore(TopK, saved_topk.get(layer.name), device),
            )
            for layer in plan.layers
        }
        self.histograms = {
            layer.name: HistogramConsumer(
                layer.name,
                units=layer.units,
                bins=bins,
                state=_restore(UnitHistograms, saved_hist.get(layer.name), device),
            )
            for layer in plan.layers
        }
        self.stats = StatsConsumer(
            [layer.point for layer in plan.layers],
            correlation=correlation,
            states={
                name: RunningStats.from_state(s, device)
                for name, s in state.get("stats", {}).items()
            },
        )
        self.spool = spool
        self.features = FeatureConsumer(plan.penultimate, "avg", spool)
        self.log = PredictionLog(state.get("predictions"))
        self.predictions = PredictionConsumer(model, dataset, top=1, on_predictions=self.log.add)

    @property
    def consumers(self) -> list:
        return [
            *self.patches.values(),
            *self.histograms.values(),
            self.stats,
            self.features,
            self.predictions,
        ]

    def images(self) -> int:
        """Images of this rank folded in so far (resumed ones included)."""
        return len(self.log.index)

    def state_dict(self) -> dict:
        """Everything a resume needs (CPU tensors and plain lists), and what ranks exchange."""
        return {
            "topk": {n: c.state.state_dict() if c.state else None for n, c in self.patches.items()},
            "histograms": {
                n: c.state.state_dict() if c.state else None for n, c in self.histograms.items()
            },
            "stats": {n: s.state_dict() for n, s in self.stats.states.items()},
            "predictions": self.log.state_dict(),
            "spool": self.spool.state_dict() if isinstance(self.spool, KeptSpool) else None,
            "seen": self.images(),
        }

    def merge(self, session: ScanSession, into: FeatureSpool) -> ScanResult | None:
        """Every rank's state merged on rank 0 (collective; None on the other ranks). The
        features are assembled into `into`, a spool of rank 0's, in dataset order."""
        state = self.state_dict()
        state.pop("spool")
        parts = session.gather(state)
        features = assemble(self.spool, session.shard, into)
        if not session.is_main:
            return None
        rows = features.rows() if features is not None else np.zeros((0, 0), np.float32)
        return ScanResult(
            topk={
                layer.name: merged(p["topk"][layer.name] for p in parts)
                for layer in self.plan.layers
            },
            histograms={
                layer.name: merged_histograms([p["histograms"][layer.name] for p in parts])
                for layer in self.plan.layers
            },
            stats=merge_states([p["stats"] for p in parts]),
            features=rows,
            feature_indices=tuple(features.indices) if features is not None else (),
            nonfinite=tuple(features.nonfinite) if features is not None else (),
            predictions=Predictions.merged([p["predictions"] for p in parts]),
            images=sum(p["seen"] for p in parts),
        )


def _restore(kind, state, device):
    return None if state is None else kind.from_state(state, device)
