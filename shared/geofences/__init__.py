"""Geofences: circles and GeoJSON polygons per fleet (or per car), their curfews, geometry and a spatial index.

Pure and typed, no I/O: `model` parses and validates outside input (a geofence as the API receives it, the
document as the store holds it), `geometry` tests a point against a shape, `index` finds the geofences a
position is in without looking at every one of them. The fold (shared/telemetry/geofencing.py) uses them;
the store and the API are in `store` and `shared/api/routes/geofences.py`. Semantics: docs/geofences.md.

`index` and `geometry` run compiled (mypyc) with the fold when a build of exactly these sources exists:
`shared/native.py`.
"""

from shared.native import use_compiled

use_compiled(__path__, __name__)
