"""Warehouse writers: one per database family, behind `base.Writer`."""
