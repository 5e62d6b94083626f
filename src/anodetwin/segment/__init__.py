"""Segmentation and electrode morphology (phases, particles, thickness, RNL, tracking).

* :func:`segment_phases`: unsupervised phases (Cu, Si, CBD+E, separator) and interfaces;
* :func:`train_classifier` / :func:`load_classifier`: learned pixel classifier;
* :func:`label_particles`, :func:`particle_table`: instances and their table;
* :func:`segment_volume`, :func:`write_labels`, :func:`read_labels`: one tomogram to a
  labels file (layout in :mod:`anodetwin.segment.pipeline`);
* :func:`series_morphology`, :func:`write_morphology`: thickness, RNL, sizes, tracks;
* :func:`edge_resolution`, :func:`collector_shift`, :func:`align`: resolution and alignment.
"""

from anodetwin.segment.classifier import PixelClassifier, load_classifier, train_classifier
from anodetwin.segment.morphology import series_morphology, step_morphology, write_morphology
from anodetwin.segment.particles import label_particles, particle_table
from anodetwin.segment.phases import PhaseSegmentation, segment_phases
from anodetwin.segment.pipeline import Segmentation, read_labels, segment_volume, write_labels
from anodetwin.segment.alignment import align, collector_shift
from anodetwin.segment.preprocess import denoise, normalise
from anodetwin.segment.resolution import edge_resolution
from anodetwin.segment.tracking import track_particles

__all__ = ["PixelClassifier", "load_classifier", "train_classifier", "series_morphology",
           "step_morphology", "write_morphology", "label_particles", "particle_table",
           "PhaseSegmentation", "segment_phases", "Segmentation", "read_labels",
           "segment_volume", "write_labels", "align", "collector_shift", "denoise",
           "normalise", "edge_resolution", "track_particles"]
