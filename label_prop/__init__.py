"""label_prop: segment videos by label propagation over frame features, and score them (DAVIS J&F).

* :class:`PropagationConfig` -- the protocol's settings, stated once (:mod:`label_prop.config`);
* :mod:`label_prop.pipeline` -- :class:`~label_prop.pipeline.VideoSegmenter`, the per-frame API;
* :func:`propagate`, :class:`LabelPropagator` -- the kNN propagation engine (:mod:`label_prop.engine`,
  :mod:`label_prop.window`; its dense specification: :mod:`label_prop.reference`);
* :mod:`label_prop.multiref` -- objects that start mid-video (one reference per start frame);
* :mod:`label_prop.features` -- encoders (``random``, our exported checkpoints, HVC releases);
* :mod:`label_prop.datasets` -- the benchmarks (:mod:`label_prop.davis`, :mod:`label_prop.ytvos`,
  :mod:`label_prop.filelists`) and their sequence plans (:mod:`label_prop.plans`);
* :mod:`label_prop.interactive` -- interactive segmentation: scribbles on any frame, propagation
  both ways, a recommended next frame, a local DAVIS-interactive robot and scorer;
* command lines: :mod:`label_prop.run` (``scripts/run_test.sh``), :mod:`label_prop.segment` (your
  own video), :mod:`label_prop.demo`, :mod:`label_prop.evaluate` (``scripts/run_metrics.sh``, with
  :mod:`label_prop.metrics`), :mod:`label_prop.submission`, :mod:`label_prop.filelists`.
"""
from label_prop.config import PropagationConfig

__all__ = ["LabelPropagator", "PropagationConfig", "propagate"]


def __getattr__(name: str):
    """The engine's names, imported on first use, so that ``import label_prop.config`` (and any
    module that needs only the settings) does not import torch (PEP 562)."""
    if name in ("LabelPropagator", "propagate"):
        from label_prop import engine
        return getattr(engine, name)
    raise AttributeError(f"module 'label_prop' has no attribute {name!r}")
