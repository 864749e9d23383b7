"""The propagation core, JPEG to label map: the encoder (:mod:`.features`), the per-frame API
(:mod:`.pipeline`, :class:`~label_prop.propagation.pipeline.VideoSegmenter`), one reference per start
frame (:mod:`.multiref`), the kNN engine and its context memory (:mod:`.engine`), the local windows
and their top-k (:mod:`.window`), and the dense specification they are tested against
(:mod:`.reference`). The method: docs/method.md; CRW (Jabri et al. 2020) and HVC (Pei et al. 2024).
"""
