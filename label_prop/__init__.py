"""label_prop: segment videos by label propagation over frame features, and score them (DAVIS J&F).

* :class:`PropagationConfig` -- the protocol's settings, stated once (:mod:`label_prop.config`);
* :mod:`label_prop.propagation` -- JPEG to label map: encoders, the per-frame
  :class:`~label_prop.propagation.pipeline.VideoSegmenter`, the kNN engine (:func:`propagate`,
  :class:`LabelPropagator`), objects that start mid-video, the dense specification;
* :mod:`label_prop.data` -- the benchmarks (DAVIS, YouTube-VOS, filelists), their sequence plans,
  image / palette-PNG / video files;
* :mod:`label_prop.evaluation` -- J and F, Mean / Recall / Decay, results folders, submissions;
* :mod:`label_prop.interactive` -- interactive segmentation: scribbles on any frame, propagation
  both ways, a recommended next frame, a local DAVIS-interactive robot and scorer;
* command lines: :mod:`label_prop.run` (``scripts/run_test.sh``), :mod:`label_prop.segment` (your
  own video), :mod:`label_prop.demo`, :mod:`label_prop.evaluate` (``scripts/run_metrics.sh``),
  :mod:`label_prop.evaluation.submission`, :mod:`label_prop.data.filelists`.
"""
from label_prop.config import PropagationConfig

__all__ = ["LabelPropagator", "PropagationConfig", "propagate"]


def __getattr__(name: str):
    """The engine's names, imported on first use, so that ``import label_prop.config`` (and any
    module that needs only the settings) does not import torch (PEP 562)."""
    if name in ("LabelPropagator", "propagate"):
        from label_prop.propagation import engine
        return getattr(engine, name)
    raise AttributeError(f"module 'label_prop' has no attribute {name!r}")
