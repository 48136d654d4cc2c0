"""The car's IoT Edge module: collects VSS signals, keeps them in a durable outbox and sends them to IoT Hub.

Its own package: it imports nothing of the cloud app (shared/, functions/, devstack/), only
`simulator.drive` (a pure model that imports nothing either) for the drive-model source.
"""
