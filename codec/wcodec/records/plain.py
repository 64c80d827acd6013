"""Record kind 1, `plain`: spec/records/plain.md."""

from __future__ import annotations

from ..errors import MalformedRecord
from .base import EncodedRecord, RecordKind, StreamPlan


class Plain(RecordKind):
    kind_id = 1
    name = "plain"
    direct_stream = 0  # stream 0 is the tensor itself

    @classmethod
    def encode(cls, dtype, shape, elements, options) -> EncodedRecord:
        return EncodedRecord(params=b"", streams=[
            StreamPlan(dtype, tuple(shape), elements, options.chain_for(dtype),
                       options.chunk_elements)])

    @classmethod
    def check(cls, record, name):
        # fields as record['x']: a Container's attribute access is a Python call, and this runs
        # for every tensor of a file when it is opened
        s = record['streams']
        if (record['params_length'] != 0 or record['stream_count'] != 1
                or record['record_flags'] & 0x02
                or s[0]['stream_dtype'] != record['dtype']
                or list(s[0]['stream_shape']) != list(record['shape'])):
            raise MalformedRecord("a plain record has no params, one stream of the tensor's "
                                  "dtype and shape, and is not lossy", rule="PLN-01", tensor=name)

    @classmethod
    def assemble(cls, record, streams, out, ctx, **options):
        pass  # stream 0 was decoded into `out` already
