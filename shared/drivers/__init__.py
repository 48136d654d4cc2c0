"""Linking a driver (an Entra user) to a vehicle, with their consent flags."""
