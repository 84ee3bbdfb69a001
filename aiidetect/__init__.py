"""aiidetect: does this image come from a generative model?

Data flows discover -> decode -> detectors -> fusion -> report; the modules
are named after those stages.
"""
__version__ = "0.1.0"
