"""Scores and results: J and F per frame (:mod:`.metrics`, equal to the official DAVIS code), Mean,
Recall and Decay (:mod:`.statistics`), the results folders and their settings (:mod:`.results`) and
the server submissions (:mod:`.submission`). The command line is :mod:`label_prop.evaluate`.
"""
