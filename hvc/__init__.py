"""hvc: self-supervised training of the HVC correspondence encoder (no labels).

Modules (each importable on its own; importing :mod:`hvc` itself loads nothing heavy):

* :mod:`hvc.backbone`    -- ResNet-18 with output stride 8 (training: layer4, inference: layer3).
* :mod:`hvc.model`       -- online / EMA target encoders, projector, predictor, flow head.
* :mod:`hvc.loss`        -- the hybrid (spatial + temporal) loss, sparse and dense forms.
* :mod:`hvc.data`        -- coordinate-aware crops, video-frame and static-image datasets, the epoch sampler.
* :mod:`hvc.config`      -- :class:`~hvc.config.TrainConfig`: every training setting, stated once.
* :mod:`hvc.presets`     -- named flag defaults for ``python -m hvc.train --preset NAME``.
* :mod:`hvc.train`       -- ``python -m hvc.train``: the command line (flags, preset) of the trainer.
* :mod:`hvc.trainer`     -- the training loop: setup, resume, steps, log rows, checkpoint decisions.
* :mod:`hvc.step`        -- one training step: precision (AMP), optimiser, data loader, forward/backward.
* :mod:`hvc.distributed` -- torchrun / DDP: the rank, the process group, the DDP wrapper, collectives.
* :mod:`hvc.rundir`      -- the run directory: resume / restart, checkpoint save, log.csv, run.json.
* :mod:`hvc.progress`    -- what a run reports: progress bar, ETA, CPU-time warning, peak memory.
* :mod:`hvc.checkpoint`  -- training checkpoints: writing and loading.
* :mod:`hvc.export`      -- ``python -m hvc.export``: encoder files for label propagation (write and read).
* :mod:`hvc.runtime`     -- atomic writes, device, git revision, exit codes (shared with label_prop).
* :mod:`hvc.launch`      -- this process's place in a torchrun launch (shared with label_prop).

The method they implement: docs/method.md ("Training data", "Model", "Loss", "Checkpoints and
encoder files", "Differences from the public code") and the paper (Pei et al., arXiv 2404.13505).
"""

__version__ = "0.1.0"
