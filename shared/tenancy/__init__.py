"""Brands, fleets, memberships and driver invitations: the data that says who may do what, where.

brand → fleet → vehicle. Admins manage it through the API (shared/api); shared/auth/access.py reads the
memberships on every call.
"""
