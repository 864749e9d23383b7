"""label_prop: segment videos by label propagation over frame features, and score them (DAVIS J&F).

* :func:`propagate`, :class:`LabelPropagator` -- the kNN propagation engine (:mod:`label_prop.engine`);
* :mod:`label_prop.features` -- encoders (``random``, our exported checkpoints, HVC releases);
* :mod:`label_prop.multiref` -- objects that start mid-video (one reference per start frame);
* :mod:`label_prop.run` -- ``scripts/run_test.sh``: a benchmark or filelist to palette PNGs
  (and submission zips, :mod:`label_prop.submission`);
* :mod:`label_prop.segment` -- ``python -m label_prop.segment``: your own video;
* :mod:`label_prop.metrics`, :mod:`label_prop.evaluate` -- ``scripts/run_metrics.sh``: J, F, J&F.
"""
from label_prop.engine import LabelPropagator, propagate

__all__ = ["LabelPropagator", "propagate"]
