"""The local Device Provisioning Service: the device side of DPS as `azure-iot-device`'s ProvisioningDeviceClient
speaks it over MQTT (protocol.py), enrollment groups, attestation and custom allocation (service.py).
See docs/local-stack.md, "Device Provisioning Service"."""
