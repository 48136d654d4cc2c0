"""Requests from the car (IoT Hub messages with `type=request`): decode, act once, reply exactly once."""
