"""Calendar-aware driving (issue 17): where the next meetings are, how long the drive takes, whether the charge
reaches, when to leave and when to tell the driver they will be late. Pure domain logic: Azure Maps only through
shared.maps.base.MapsClient, storage only through the small interfaces in shared/travel/stores.py."""
