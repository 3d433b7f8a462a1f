"""Looking inside a trained network as Zeiler & Fergus (2014) did: first-layer filters and their
evolution, occlusion sensitivity, deconvnet projections of top activations, invariance curves.

Each tool reads a finished run, takes a batch size, writes PNG figures (matplotlib) and can log the
same images to the run's TensorBoard.
"""
from tfxfer.visualize.deconv import draw_deconv
from tfxfer.visualize.filters import draw_filters
from tfxfer.visualize.invariance import Ranges, draw_invariance
from tfxfer.visualize.occlusion import draw_occlusion

__all__ = ["Ranges", "draw_deconv", "draw_filters", "draw_invariance", "draw_occlusion"]
