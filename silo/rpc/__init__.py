"""gRPC surface of a silo: servicers, the server assembly, authentication."""
