"""Vehicle simulator: N cars on the real `azure-iot-device` SDK, against IoT Hub or the local stack.

python -m simulator --connection-strings devices.txt --duration 60 --seed 7
python -m simulator --local --vehicles 5          # against a running `make dev` stack
"""
