"""Telemetry ingestion: contract v1 decoding, VSS validation, vehicle state, trips, alerts and history.

The fold's modules run compiled (mypyc) when a build of exactly these sources exists: `shared/native.py`.
"""

from shared.native import use_compiled

use_compiled(__path__, __name__)
