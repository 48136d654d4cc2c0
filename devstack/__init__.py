"""The local stack: real local servers standing in for Azure services, for tests, benchmarks and `make demo`.

Only for development: nothing in function_app.py, functions/ or shared/ imports this package.
"""
