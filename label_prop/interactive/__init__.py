"""Interactive video object segmentation: scribbles on any frame, propagation both ways, a
recommended next frame, and a local scorer after the DAVIS interactive protocol.

* :mod:`~label_prop.interactive.scribbles` -- strokes per label in pixel coordinates;
* :mod:`~label_prop.interactive.seeded` -- strokes to a frame's mask (random walker / feature kNN);
* :mod:`~label_prop.interactive.robot` -- the protocol's scribble robot, from ground truth.
"""
