"""Segmentation and electrode morphology (phases, particles, thickness, RNL, tracking).

Entry points:

* :func:`segment_volume`, :func:`write_labels`, :func:`read_labels`: one tomogram to a
  :class:`Segmentation` and its labels file (layout in :mod:`anodetwin.segment.pipeline`);
  :func:`segment_to_file`: the same block by block, for scans larger than memory;
* :func:`segment_phases`: unsupervised phases (Cu, Si, CBD+E, separator) and interfaces
  (:class:`PhaseSegmentation`); :func:`interfaces_from_phases` for phases from elsewhere;
* :func:`train_classifier` / :func:`load_classifier`: learned pixel classifier
  (:class:`PixelClassifier`, :func:`pixel_features`);
* :func:`label_particles`, :func:`particle_table` (:data:`PARTICLE_TABLE`),
  :func:`touching_pairs`: particle instances, their table and their contacts;
* :func:`series_morphology`, :func:`step_morphology`, :func:`write_morphology`: thickness,
  RNL, sizes and tracks of a series (:class:`SeriesMorphology`);
* :func:`track_particles` (:class:`Tracks`), :func:`dvc_prior`, :func:`thickness_prior`:
  particle tracking between steps;
* :func:`edge_resolution`, :func:`collector_shift`, :func:`align`: resolution and alignment;
* :func:`denoise`, :func:`normalise`: preprocessing;
* :func:`dice`, :func:`instance_score`: scores against a reference segmentation.
"""

from anodetwin.segment.alignment import align, collector_shift
from anodetwin.segment.classifier import (PixelClassifier, load_classifier, pixel_features,
                                          train_classifier)
from anodetwin.segment.metrics import InstanceScore, dice, instance_score
from anodetwin.segment.morphology import (SeriesMorphology, series_morphology, step_morphology,
                                          write_morphology)
from anodetwin.segment.particles import (PARTICLE_TABLE, label_particles, particle_table,
                                         touching_pairs)
from anodetwin.segment.phases import PhaseSegmentation, segment_phases
from anodetwin.segment.pipeline import (Segmentation, interfaces_from_phases, open_labels,
                                        read_labels, segment_to_file, segment_volume,
                                        write_labels)
from anodetwin.segment.preprocess import denoise, normalise
from anodetwin.segment.resolution import EdgeResolution, edge_resolution
from anodetwin.segment.tracking import Tracks, dvc_prior, thickness_prior, track_particles

__all__ = ["Segmentation", "segment_volume", "segment_to_file", "write_labels", "read_labels",
           "open_labels",
           "PhaseSegmentation", "segment_phases", "interfaces_from_phases",
           "PixelClassifier", "train_classifier", "load_classifier", "pixel_features",
           "PARTICLE_TABLE", "label_particles", "particle_table", "touching_pairs",
           "SeriesMorphology", "series_morphology", "step_morphology", "write_morphology",
           "Tracks", "track_particles", "dvc_prior", "thickness_prior",
           "EdgeResolution", "edge_resolution", "collector_shift", "align",
           "denoise", "normalise", "InstanceScore", "dice", "instance_score"]
