"""Privacy by construction: data categories and their legal bases, consent, erasure and export (issue 12)."""
