"""Cloud-controlled collection: the collection policy format, its layering brand -> fleet, and its push to the
cars' Edge module twins (issue 16)."""
