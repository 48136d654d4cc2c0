from devstack.graph_sandbox.server import main

main()
