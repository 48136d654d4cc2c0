"""One router per area of the API; each route declares its requirement through shared/api/guard.py."""
