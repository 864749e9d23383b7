"""Where frames and masks come from: the benchmark registry (:mod:`.datasets`), the DAVIS and
YouTube-VOS layouts (:mod:`.davis`, :mod:`.ytvos`), filelists (:mod:`.filelists`), the sequence plans
every layout produces (:mod:`.plans`), image and palette-PNG files (:mod:`.io`), your own video
(:mod:`.video`) and the synthetic clips of the demo and the tests (:mod:`.synthetic`).
"""
