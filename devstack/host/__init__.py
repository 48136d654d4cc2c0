"""A local Azure Functions host for the Python v2 app: finds the functions in `app.get_functions()` and drives
their triggers the way the Functions host does (Event Hubs batches, queue polling with poison queues, NCRONTAB
timers, HTTP on :7071), honouring each function's retry policy. For machines where Core Tools cannot run.
"""
