"""Generated protobuf/gRPC modules for the kubelet APIs.

Do not edit: change protos/proto/*.proto and run `python -m protos.generate`.

Modules (each with .pyi stubs):
    protos.gen.dra_v1_pb2
    protos.gen.dra_v1_pb2_grpc
    protos.gen.dra_v1beta1_pb2
    protos.gen.dra_v1beta1_pb2_grpc
    protos.gen.health_v1alpha1_pb2
    protos.gen.health_v1alpha1_pb2_grpc
    protos.gen.pluginregistration_pb2
    protos.gen.pluginregistration_pb2_grpc
"""
