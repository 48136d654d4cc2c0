"""The fleet: the service behind the car routes (reads, registration, privacy) and its models.

The HTTP application that serves it is shared/api/; `models.py` validates its requests and shapes its answers.
"""
