"""The service side of IoT Hub: cloud-to-device messages and device twins, behind one small interface."""
