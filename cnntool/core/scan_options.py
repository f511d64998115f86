"""How a dataset scan reads and batches its images: the one home of the scan defaults.

The command line's data options (cli/options.py), the scan session (core/session.py), the batch
stream (core/data.py), torchrun's wait (core/sharding.py) and the one-call scans
(tasks/dataset_scans.py) take their defaults from `ScanOptions` instead of writing them again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScanOptions:
    """How a dataset scan reads and batches its images (the same options on every scan)."""

    batch_size: int = 32
    workers: int | None = None  # None: from the core count
    max_pixels: int | None = None  # None: Pillow's limit
    precision: str = "fp32"
    fold_bn: bool = True
    dist_timeout: float = 600.0  # seconds a rank waits for the others under torchrun
