"""Segmentation and electrode morphology."""
