"""Azure Maps behind a small interface (issue 17): geocode a meeting's place, route to it, find charging stops.

`base.MapsClient` is what the domain calls; `azure_client.AzureMapsClient` speaks Azure Maps' REST API with the
managed identity; `runtime.maps_client` is the process's one instance. Importing this package loads no SDK."""
