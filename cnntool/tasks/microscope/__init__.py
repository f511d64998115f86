"""The microscope: one pass over DATA measures everything data-driven for every chosen layer at
once, then per-layer pictures and the map; io/microscope.py writes the site.

- plan: which layers (default: spread over the depth) and units, and what the trace says of them;
- data_pass: the consumers of the one pass (top patches, diagnose's statistics, histograms, the
  penultimate features, predictions), their resume state and their merge across ranks;
- histogram: streaming per-unit histograms on a canonical power-of-two grid (exact merges);
- analysis: per-layer and per-unit views (figures, correlated units, class votes), the map;
- pictures: guided-backprop projections of the hits, feature visualizations (tasks.maximize);
- attack: FGSM accuracy against ε and the first fooled images.
"""

from cnntool.tasks.microscope.analysis import (
    LayerView,
    MapView,
    UnitView,
    diagnosis,
    embedding,
    layer_view,
)
from cnntool.tasks.microscope.attack import AttackView, FgsmSweep, Fooled
from cnntool.tasks.microscope.attack import merged as merged_attack
from cnntool.tasks.microscope.data_pass import (
    KeptSpool,
    MicroscopeScan,
    PredictionLog,
    Predictions,
    ScanResult,
)
from cnntool.tasks.microscope.histogram import (
    BINS,
    HistogramConsumer,
    UnitHistograms,
    merged_histograms,
)
from cnntool.tasks.microscope.pictures import project_hits, visualization_steps, visualize_units
from cnntool.tasks.microscope.plan import (
    DEFAULT_UNITS,
    ClassifierPlan,
    LayerPlan,
    MicroscopePlan,
    chosen_units,
    default_layers,
    feeds_classifier,
    plan,
)

__all__ = [
    "AttackView",
    "BINS",
    "ClassifierPlan",
    "DEFAULT_UNITS",
    "FgsmSweep",
    "Fooled",
    "HistogramConsumer",
    "KeptSpool",
    "LayerPlan",
    "LayerView",
    "MapView",
    "MicroscopePlan",
    "MicroscopeScan",
    "PredictionLog",
    "Predictions",
    "ScanResult",
    "UnitHistograms",
    "UnitView",
    "chosen_units",
    "default_layers",
    "diagnosis",
    "embedding",
    "feeds_classifier",
    "layer_view",
    "merged_attack",
    "merged_histograms",
    "plan",
    "project_hits",
    "visualization_steps",
    "visualize_units",
]
