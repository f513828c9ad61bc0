"""Generated gRPC/protobuf modules for the Nomad plugin wire contract (regenerate: python scripts/gen_protos.py).

The .proto files here are this project's own, written from the contract tables
(docs: nomad-plugin-protocol.md); package, service, method names and field numbers match Nomad 1.1.
"""
