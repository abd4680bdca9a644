"""Central collector: gRPC server, store, detection rules, actions, query API."""
