"""Generated gRPC/protobuf modules for the Nomad plugin wire contract (regenerate: python scripts/gen_protos.py).

The .proto files here are this project's own, written from Nomad's wire names and field numbers
(docs/nomad-notes.md, "Names on the wire"); package, service, method names and field numbers match Nomad 1.1.
"""
