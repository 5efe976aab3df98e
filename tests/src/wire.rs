//! Requests as bytes: every RPC called with whatever bytes a test makes (a valid message with
//! one field made hostile, or noise), and the request messages' fields read from the proto
//! descriptor, so that a new field or RPC is covered without editing the tests.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use steadfast_proto::v1 as pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Passes bytes through: the request is sent as it is, the reply is not decoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// The encoder and decoder of [`RawCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBytes;

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

/// How one raw call ended: answered (the first reply message, or a stream that opened and
/// sent nothing within the wait), refused with a status, or still waiting after `wait`.
#[derive(Debug)]
pub enum Answer {
    /// A reply (unary) or the first message of a stream.
    Ok,
    /// A stream that is open and quiet (a watch, a worker session).
    Open,
    /// Refused.
    Refused(tonic::Status),
    /// No answer within the wait: the server is holding the call (a long poll).
    Waiting,
}

/// Calls `/steadfast.v1.{service}/{method}` with `body` as the request message, waiting at
/// most `wait` for the answer. Every RPC is called as a server stream: on the wire a unary
/// reply is a stream of one.
pub async fn call(channel: &Channel, path: &str, body: Vec<u8>, wait: Duration) -> Answer {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let path: tonic::codegen::http::uri::PathAndQuery = match path.parse() {
        Ok(p) => p,
        Err(_) => return Answer::Refused(tonic::Status::internal("bad path in the test")),
    };
    let fut = async {
        if let Err(e) = grpc.ready().await {
            return Answer::Refused(tonic::Status::unavailable(e.to_string()));
        }
        match grpc
            .server_streaming(tonic::Request::new(body), path, RawCodec)
            .await
        {
            Err(s) => Answer::Refused(s),
            Ok(resp) => {
                let mut stream = resp.into_inner();
                match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
                    Ok(Ok(_)) => Answer::Ok,
                    Ok(Err(s)) => Answer::Refused(s),
                    Err(_) => Answer::Open,
                }
            }
        }
    };
    tokio::time::timeout(wait, fut)
        .await
        .unwrap_or(Answer::Waiting)
}

/// One RPC of the `steadfast.v1` services.
#[derive(Debug, Clone)]
pub struct Rpc {
    /// `ClientService`, ...
    pub service: String,
    /// `StartWorkflow`, ...
    pub method: String,
    /// The request message's full name without the leading dot (`steadfast.v1.StartWorkflowRequest`).
    pub input: String,
    /// Whether the server answers with a stream.
    pub server_streaming: bool,
}

impl Rpc {
    /// The HTTP/2 path.
    pub fn path(&self) -> String {
        format!("/steadfast.v1.{}/{}", self.service, self.method)
    }
}

/// The descriptors of the steadfast.v1 package.
pub struct Schema {
    set: FileDescriptorSet,
}

/// What a leaf field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// A `string`.
    String,
    /// A `bytes`.
    Bytes,
    /// An enum (its number).
    Enum,
}

/// A string, bytes or enum field reached from a request message: the field numbers from the
/// request down to it, and its name as a dotted path.
#[derive(Debug, Clone)]
pub struct FieldPath {
    /// Field numbers, outermost first.
    pub numbers: Vec<u32>,
    /// `signal_with_start.workflow_type`, ...
    pub name: String,
    /// What it holds.
    pub leaf: Leaf,
    /// Whether the innermost field is repeated (an extra element is added, not replaced).
    pub repeated: bool,
}

impl Schema {
    /// From the descriptor set compiled into the proto crate.
    pub fn load() -> Result<Schema> {
        Ok(Schema {
            set: FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET)?,
        })
    }

    /// Every RPC, in descriptor order.
    pub fn rpcs(&self) -> Vec<Rpc> {
        let mut out = Vec::new();
        for file in self
            .set
            .file
            .iter()
            .filter(|f| f.package() == "steadfast.v1")
        {
            for svc in &file.service {
                for m in &svc.method {
                    out.push(Rpc {
                        service: svc.name().to_string(),
                        method: m.name().to_string(),
                        input: m.input_type().trim_start_matches('.').to_string(),
                        server_streaming: m.server_streaming(),
                    });
                }
            }
        }
        out
    }

    /// The message named `full` (`steadfast.v1.X`, top-level or nested `steadfast.v1.X.Y`).
    pub fn message(&self, full: &str) -> Result<&DescriptorProto> {
        let full = full.trim_start_matches('.');
        for file in &self.set.file {
            let pkg = file.package();
            for m in &file.message_type {
                if let Some(found) = find(m, &format!("{pkg}.{}", m.name()), full) {
                    return Ok(found);
                }
            }
        }
        bail!("no message {full} in the descriptor")
    }

    /// Every string, bytes and enum field reachable from `message` through at most `depth`
    /// nested messages, skipping the message types in `opaque` (checked as a whole, e.g.
    /// imported history events, whose hash chain covers their fields).
    pub fn leaves(&self, message: &str, depth: usize, opaque: &[&str]) -> Result<Vec<FieldPath>> {
        let mut out = Vec::new();
        self.walk(message, depth, opaque, &mut Vec::new(), "", &mut out)?;
        Ok(out)
    }

    fn walk(
        &self,
        message: &str,
        depth: usize,
        opaque: &[&str],
        numbers: &mut Vec<u32>,
        prefix: &str,
        out: &mut Vec<FieldPath>,
    ) -> Result<()> {
        let m = self.message(message)?;
        for f in &m.field {
            let name = format!("{prefix}{}", f.name());
            numbers.push(f.number() as u32);
            let repeated = f.label() == Label::Repeated;
            let leaf = match f.r#type() {
                Type::String => Some(Leaf::String),
                Type::Bytes => Some(Leaf::Bytes),
                Type::Enum => Some(Leaf::Enum),
                _ => None,
            };
            if let Some(leaf) = leaf {
                out.push(FieldPath {
                    numbers: numbers.clone(),
                    name,
                    leaf,
                    repeated,
                });
            } else if f.r#type() == Type::Message
                && depth > 0
                && !opaque.contains(&f.type_name().trim_start_matches('.'))
            {
                self.walk(
                    f.type_name(),
                    depth - 1,
                    opaque,
                    numbers,
                    &format!("{name}."),
                    out,
                )
                .with_context(|| format!("field {name}"))?;
            }
            numbers.pop();
        }
        Ok(())
    }
}

fn find<'a>(m: &'a DescriptorProto, name: &str, want: &str) -> Option<&'a DescriptorProto> {
    if name == want {
        return Some(m);
    }
    m.nested_type
        .iter()
        .find_map(|n| find(n, &format!("{name}.{}", n.name()), want))
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The encoding of `path` set to `value` (length-delimited: a string or bytes) or `number`
/// (an enum), wrapped in each enclosing message. Appended to a valid message it overrides a
/// singular field (the last one read wins), adds an element to a repeated one, and merges into
/// the enclosing messages, as protobuf decoding defines.
pub fn field_bytes(path: &[u32], value: FieldValue<'_>) -> Vec<u8> {
    let (last, outer) = path.split_last().expect("a field path is never empty");
    let mut inner = Vec::new();
    match value {
        FieldValue::Bytes(b) => {
            varint(((*last as u64) << 3) | 2, &mut inner);
            varint(b.len() as u64, &mut inner);
            inner.extend_from_slice(b);
        }
        FieldValue::Number(n) => {
            varint((*last as u64) << 3, &mut inner);
            varint(n as u64, &mut inner);
        }
    }
    for number in outer.iter().rev() {
        let mut wrapped = Vec::with_capacity(inner.len() + 8);
        varint(((*number as u64) << 3) | 2, &mut wrapped);
        varint(inner.len() as u64, &mut wrapped);
        wrapped.extend_from_slice(&inner);
        inner = wrapped;
    }
    inner
}

/// The value [`field_bytes`] encodes.
#[derive(Debug, Clone, Copy)]
pub enum FieldValue<'a> {
    /// A string's or bytes' contents.
    Bytes(&'a [u8]),
    /// An enum's number (as a varint: negative numbers take ten bytes, as protobuf says).
    Number(i64),
}
