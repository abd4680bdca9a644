"""Versioned protobuf/gRPC contract (package ``gpuwarden.v1``); generated code lives in v1/."""
