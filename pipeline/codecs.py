"""Faust codecs for the wire contract: JSON in, pydantic models (or ``Rejected``) out.

Decoding never raises, so one bad message cannot stop a stream: it reaches the agent as a
``schemas.codec.Rejected`` with its original bytes, and goes on to the dead letters.
"""

from faust.serializers import codecs
from pydantic import BaseModel

from schemas.codec import decode_camera_event, decode_car_park_status, encode


class _MessageCodec(codecs.Codec):
    decoder = staticmethod(decode_camera_event)

    def _dumps(self, obj) -> bytes:
        if isinstance(obj, BaseModel):
            return encode(obj)
        return obj

    def _loads(self, s: bytes):
        return type(self).decoder(s)


class CameraEventCodec(_MessageCodec):
    decoder = staticmethod(decode_camera_event)


class CarParkStatusCodec(_MessageCodec):
    decoder = staticmethod(decode_car_park_status)


CAMERA_EVENT = "parkwarden.camera-event"
CAR_PARK_STATUS = "parkwarden.car-park-status"
codecs.register(CAMERA_EVENT, CameraEventCodec())
codecs.register(CAR_PARK_STATUS, CarParkStatusCodec())
