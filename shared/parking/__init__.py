"""Contained messages (dead letters and parked messages): list them, and redrive them after a fix."""
