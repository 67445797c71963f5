"""Calibration: agreement between human reviewers and the automated judge, and among reviewers."""
