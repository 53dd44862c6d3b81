"""Faust codecs for the wire contract: JSON in, pydantic models (or ``Rejected``) out.

Decoding never raises, so one bad message cannot stop a stream: it reaches the agent as a
``schemas.codec.Rejected`` with its original bytes, and goes on to the dead letters.
"""

from faust.serializers import codecs
from pydantic import BaseModel

from schemas.codec import decode_camera_event, decode_car_park_status, encode
from schemas.events import EVIDENCE_URL_SCHEMES, validation_context


class _MessageCodec(codecs.Codec):
    decoder = staticmethod(decode_camera_event)

    def __init__(self, children=None, context: dict | None = None, **kwargs) -> None:
        super().__init__(children, context=context, **kwargs)  # in kwargs, so clones keep it
        self.context = context

    def _dumps(self, obj) -> bytes:
        if isinstance(obj, BaseModel):
            return encode(obj)
        return obj

    def _loads(self, s: bytes):
        return type(self).decoder(s, self.context)


class CameraEventCodec(_MessageCodec):
    decoder = staticmethod(decode_camera_event)


class CarParkStatusCodec(_MessageCodec):
    decoder = staticmethod(decode_car_park_status)


CAMERA_EVENT = "parkwarden.camera-event"
CAR_PARK_STATUS = "parkwarden.car-park-status"


def register(evidence_url_schemes=EVIDENCE_URL_SCHEMES) -> None:
    """Register the codecs; camera events may carry evidence URLs with these schemes
    (the worker passes ``PW_EVIDENCE_URL_SCHEMES``; others become dead letters)."""
    context = validation_context(evidence_url_schemes)
    codecs.register(CAMERA_EVENT, CameraEventCodec(context=context))
    codecs.register(CAR_PARK_STATUS, CarParkStatusCodec(context=context))


register()
