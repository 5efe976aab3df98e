//! The fake HTTP servers of the tests (an OpenAI-compatible provider, a collector): reading
//! one request off a plain loopback connection, with no HTTP stack to build.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Result;

/// Reads one HTTP/1.1 request from `stream` (30 s at most per read): its request line and its
/// body (by `Content-Length`).
pub fn read_request(stream: &TcpStream) -> Result<(String, Vec<u8>)> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((request_line, body))
}
