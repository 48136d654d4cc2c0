"""A local IoT Hub device endpoint: what a car using the `azure-iot-device` SDK over MQTT talks to.

The device side of IoT Hub is not a general MQTT broker: the connection *is* the device identity (SAS token),
twin requests carry no device id in their topics, and a device may only use its own topics. So the local hub is
a small MQTT 3.1.1 server speaking exactly that subset (see endpoint.py), with routing (routing.py), twins
(twin.py) and a service API (service_api.py) for the backend's IoT Hub gateway.
"""
