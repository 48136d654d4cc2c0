"""Vehicle simulator: N cars on the real `azure-iot-device` SDK, against IoT Hub or the local stack.

python -m simulator --connection-strings devices.txt --duration 60 --seed 7
python -m simulator --local --vehicles 5          # against a running `make dev` stack
python -m simulator --local --sleep 0.3           # cars sleep (disconnect) in 30 % of their parked spells

Each car answers remote commands (direct methods and queued C2D messages, docs/messages.md "Commands").
"""
