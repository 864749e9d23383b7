"""Interactive video object segmentation: scribbles on any frame, propagation both ways, a
recommended next frame, and a local scorer after the DAVIS interactive protocol.

* :mod:`~label_prop.interactive.session` -- :class:`InteractiveSession`: frames in, scribbles or
  masks in, masks of every frame, reliability scores and a recommended frame out;
* :mod:`~label_prop.interactive.scribbles` -- strokes per label in pixel coordinates;
* :mod:`~label_prop.interactive.seeded` -- strokes to a frame's mask (random walker / feature kNN);
* :mod:`~label_prop.interactive.robot` -- the protocol's scribble robot, from ground truth;
* :mod:`~label_prop.interactive.scoring`, :mod:`~label_prop.interactive.protocol` -- J&F per
  interaction, AUC-J&F, J&F@60s, and the loop over one sequence;
* :mod:`~label_prop.interactive.run` -- ``scripts/run_interactive.sh``.
"""
from label_prop.interactive.session import InteractiveConfig, InteractiveSession

__all__ = ["InteractiveConfig", "InteractiveSession"]
