"""Teams meetings for the car: join links for calendar events and ad-hoc meetings, created at most once."""
