"""Domain logic of the automotive cloud, independent of the Azure Functions runtime.

Triggers in `functions/` bind and call into this package; every I/O dependency sits behind a small interface
in `shared.stores` so the same code runs in Azure, in the local stack and in tests.
"""
