"""Drivers signed in from the car with their own Microsoft account: device-code sign-in, delegated Graph
tokens sealed at rest, driver profiles per car (docs/accounts.md)."""
