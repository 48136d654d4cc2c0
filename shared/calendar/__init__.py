"""The driver's Outlook calendar in the car: delta sync into Cosmos, change notifications, the twin agenda."""
