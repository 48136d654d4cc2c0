"""Remote commands: the catalogue, the lifecycle, delivery by direct method or queued C2D, and the car's outcome."""
