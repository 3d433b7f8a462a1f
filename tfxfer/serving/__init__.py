"""TF Serving's REST and gRPC APIs over exported feature extractors, and the clients that read features."""
