"""Bridges to the annotation tools reviewers already use (Label Studio)."""
