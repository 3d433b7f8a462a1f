"""TF Serving's gRPC API on grpc.aio, with the tensorflow-serving-api package's own generated stubs:
`tensorflow.serving.PredictionService` (Predict, GetModelMetadata) and `tensorflow.serving.ModelService`
(GetModelStatus). Classify, Regress, MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED.
"""
from __future__ import annotations

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfxfer.serving.errors import ServingError, invalid


def _model_version(spec) -> int | None:
    if spec.HasField("version_label"):
        raise invalid(f"model version labels are not served (got label {spec.version_label!r}); give a version")
    return spec.version.value if spec.HasField("version") else None


async def _abort(context, error: ServingError):
    await context.abort(error.code, error.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core):
        self.core = core

    async def Predict(self, request, context):
        try:
            servable = self.core.manager.get(request.model_spec.name, _model_version(request.model_spec))
            signature = servable.signature(request.model_spec.signature_name)
            inputs = {}
            for name, proto in request.inputs.items():
                try:
                    inputs[name] = tf.make_ndarray(proto)
                except (TypeError, ValueError) as e:
                    raise invalid(f"input {name!r} is not a valid TensorProto: {e}") from None
            unknown = sorted(set(request.output_filter) - set(signature.outputs))
            if unknown:
                raise invalid(f"output tensor alias not found in signature: {', '.join(unknown)}. Outputs "
                              f"expected to be in the set {{{','.join(sorted(signature.outputs))}}}.")
            outputs = await self.core.batcher.run(servable, signature, inputs)
        except ServingError as e:
            await _abort(context, e)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for name, value in outputs.items():
            if not request.output_filter or name in request.output_filter:
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response

    async def GetModelMetadata(self, request, context):
        try:
            return self.core.metadata(request.model_spec.name, _model_version(request.model_spec),
                                      list(request.metadata_field))
        except ServingError as e:
            await _abort(context, e)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core):
        self.core = core

    async def GetModelStatus(self, request, context):
        try:
            return self.core.manager.status(request.model_spec.name, _model_version(request.model_spec))
        except ServingError as e:
            await _abort(context, e)


def make_server(core, address: str, max_message_bytes: int) -> grpc.aio.Server:
    # Without so_reuseport 0, a second server would silently share a port already in use.
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        raise OSError(f"address {address} is in use or cannot be bound")
    return server
