from devstack.maps_sandbox.server import main

main()
