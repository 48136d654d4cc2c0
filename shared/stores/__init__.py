"""I/O behind small interfaces: a document store (Cosmos DB) and a dead-letter sink (Blob Storage).

`base` defines them; `cosmos` and `blob_deadletters` talk to Azure (and to the local emulators with the same
code); `memory` keeps everything in process for unit tests and benchmarks.
"""
