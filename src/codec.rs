//! The job-worker service's protobuf codec: prost's, except that a request
//! body that does not decode as the method's message is the caller's
//! mistake, answered `INVALID_ARGUMENT` with an `ErrorInfo`, where prost's
//! codec says `INTERNAL` (which tells a worker to page the gateway's
//! operator).

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Code, Status,
    codec::{BufferSettings, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::error::undecodable_request_status;

pub struct Codec<T, U> {
    prost: ProstCodec<T, U>,
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec {
            prost: ProstCodec::default(),
            _types: PhantomData,
        }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CallerDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CallerDecoder(self.prost.decoder())
    }
}

/// prost's decoder, with its parse errors blamed on the sender.
pub struct CallerDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for CallerDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| match status.code() {
            // prost answers a parse error as INTERNAL; nothing else is.
            Code::Internal => undecodable_request_status(status.message()),
            _ => status,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
