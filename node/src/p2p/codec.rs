//! The libp2p request-response codec shared by every orgmesh protocol: a 4-byte big-endian length
//! prefix, then a versioned postcard envelope (`protocol::wire`). The length is checked against the
//! protocol's limit before a single byte of the body is allocated; a bad frame is an I/O error that
//! fails only that stream, never the node. Frame bytes (prefix included) are counted for metrics.

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use orgmesh_protocol::wire;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::metrics::WireCounter;

/// A codec for requests `Req` and responses `Resp`, each frame at most `limit` bytes.
#[derive(Debug)]
pub struct PostcardCodec<Req, Resp> {
    limit: usize,
    bytes: WireCounter,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> Clone for PostcardCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self { limit: self.limit, bytes: self.bytes.clone(), _types: PhantomData }
    }
}

impl<Req, Resp> PostcardCodec<Req, Resp> {
    /// A codec refusing frames over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self::counting(limit, WireCounter::default())
    }

    /// Like [`new`](Self::new), counting frame bytes into `bytes`.
    pub fn counting(limit: usize, bytes: WireCounter) -> Self {
        Self { limit, bytes, _types: PhantomData }
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send, M: DeserializeOwned>(
    io: &mut T,
    limit: usize,
    bytes: &WireCounter,
) -> io::Result<M> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {limit}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    bytes.received(4 + len);
    wire::decode(&buf, limit).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_frame<T: AsyncWrite + Unpin + Send, M: Serialize>(
    io: &mut T,
    msg: &M,
    limit: usize,
    counter: &WireCounter,
) -> io::Result<()> {
    let bytes = wire::encode(msg, limit).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // encode() enforces `limit`, which is far below u32::MAX.
    let len = u32::try_from(bytes.len()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&bytes).await?;
    counter.sent(4 + bytes.len());
    io.close().await
}

impl<Req, Resp> request_response::Codec for PostcardCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + Sync + 'static,
    Resp: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Req> {
        read_frame(io, self.limit, &self.bytes).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Resp> {
        read_frame(io, self.limit, &self.bytes).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Req,
    ) -> io::Result<()> {
        write_frame(io, &req, self.limit, &self.bytes).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()> {
        write_frame(io, &res, self.limit, &self.bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orgmesh_protocol::wire::task::TaskRequest;
    use orgmesh_protocol::{Attempt, TaskId};

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused_before_reading() {
        let msg = TaskRequest::Started { task: TaskId::new(1, 1), attempt: Attempt(1) };
        let counter = WireCounter::default();
        let mut buf = futures::io::Cursor::new(Vec::new());
        write_frame(&mut buf, &msg, 1024, &counter).await.unwrap();
        let written = buf.get_ref().len();
        let mut rd = futures::io::Cursor::new(buf.into_inner());
        assert_eq!(read_frame::<_, TaskRequest>(&mut rd, 1024, &counter).await.unwrap(), msg);
        assert_eq!((counter.sent_total(), counter.received_total()), (written as u64, written as u64));

        // A 4 GiB length prefix must fail at once, without allocating.
        let mut huge = futures::io::Cursor::new(vec![0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]);
        let err = read_frame::<_, TaskRequest>(&mut huge, 1024, &counter).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let mut garbage = futures::io::Cursor::new(vec![0, 0, 0, 3, 9, 9, 9]);
        assert!(read_frame::<_, TaskRequest>(&mut garbage, 1024, &counter).await.is_err());
    }
}
