//! A small client for the broker's streamed answers: server-sent events from `/v1/messages`
//! and AWS event-stream frames from `/model/{id}/invoke-with-response-stream`, read as they
//! arrive, plus a raw-socket request for tests whose client leaves mid-way.

use std::time::Duration;

use actix_web::web::Bytes;
use awc::error::PayloadError;
use futures_util::stream::LocalBoxStream;
use futures_util::{Stream, StreamExt};
use model_server::protocol::eventstream::{decode_frame, Frame};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `event:` line.
    pub name: String,
    /// The `data:` line, as JSON (`Null` if it was not JSON).
    pub data: Value,
}

/// A streamed response being read.
pub struct Streamed {
    /// Status code.
    pub status: u16,
    /// Response headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, read on demand.
    body: LocalBoxStream<'static, Result<Bytes, PayloadError>>,
    /// Bytes read but not yet parsed into an event or frame.
    buffer: Vec<u8>,
}

impl Streamed {
    /// Wraps a response whose head arrived.
    pub fn new<S>(body: awc::ClientResponse<S>) -> Streamed
    where
        S: Stream<Item = Result<Bytes, PayloadError>> + Unpin + 'static,
    {
        let headers = body
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Streamed {
            status: body.status().as_u16(),
            headers,
            body: body.boxed_local(),
            buffer: Vec::new(),
        }
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads more of the body; false at its end (or when it broke).
    async fn fill(&mut self) -> bool {
        match self.body.next().await {
            Some(Ok(chunk)) => {
                self.buffer.extend_from_slice(&chunk);
                true
            }
            _ => false,
        }
    }

    /// The next server-sent event, `None` at the end of the body.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = find(&self.buffer, b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                return Some(parse_event(&block));
            }
            if !self.fill().await {
                assert!(
                    self.buffer.is_empty(),
                    "the body ended inside an event: {:?}",
                    String::from_utf8_lossy(&self.buffer)
                );
                return None;
            }
        }
    }

    /// The rest of the body as JSON (an error answer's).
    pub async fn json(&mut self) -> Value {
        while self.fill().await {}
        let body = std::mem::take(&mut self.buffer);
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)))
    }

    /// The rest of the body as text (for framings `next_event` does not parse, such as
    /// OpenAI's `data: [DONE]` and `: ping` comments).
    pub async fn text(&mut self) -> String {
        while self.fill().await {}
        String::from_utf8(std::mem::take(&mut self.buffer)).expect("a UTF-8 body")
    }

    /// Every remaining server-sent event.
    pub async fn events(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next_event().await {
            events.push(event);
        }
        events
    }

    /// The next event-stream frame, `None` at the end of the body.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buffer.len() >= 4 {
                let total = u32::from_be_bytes(self.buffer[..4].try_into().unwrap()) as usize;
                if self.buffer.len() >= total {
                    let frame: Vec<u8> = self.buffer.drain(..total).collect();
                    return Some(decode_frame(&frame).expect("a valid event-stream frame"));
                }
            }
            if !self.fill().await {
                assert!(self.buffer.is_empty(), "the body ended inside a frame");
                return None;
            }
        }
    }

    /// Every remaining frame, each an Anthropic event (decoded from its chunk) or an
    /// exception (its type and payload).
    pub async fn frames(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next_frame().await {
            frames.push(frame);
        }
        frames
    }
}

/// The Anthropic event a `chunk` frame carries.
pub fn chunk_event(frame: &Frame) -> Option<Value> {
    match frame {
        Frame::Event {
            event_type,
            payload,
        } if event_type == "chunk" => {
            let payload: Value = serde_json::from_slice(payload).ok()?;
            let bytes = aws_smithy_types::base64::decode(payload["bytes"].as_str()?).ok()?;
            serde_json::from_slice(&bytes).ok()
        }
        _ => None,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_event(block: &[u8]) -> SseEvent {
    let text = String::from_utf8_lossy(block);
    let mut name = String::new();
    let mut data = String::new();
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("event: ") {
            name = value.to_string();
        } else if let Some(value) = line.strip_prefix("data: ") {
            data.push_str(value);
        }
    }
    SseEvent {
        name,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
    }
}

/// `POST url+path` with a JSON body and extra headers; returns once the response head arrived.
pub async fn post(url: &str, path: &str, headers: &[(&str, &str)], body: &Value) -> Streamed {
    let mut request = super::client()
        .post(format!("{url}{path}"))
        .insert_header(("content-type", "application/json"));
    for (name, value) in headers {
        request = request.insert_header((*name, *value));
    }
    let response = request
        .send_body(body.to_string())
        .await
        .expect("the request is answered");
    Streamed::new(response)
}

/// `POST url+path` answered whole: the status, the response (for its headers) and its JSON.
pub async fn post_whole(
    url: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, Streamed, Value) {
    let mut response = post(url, path, headers, body).await;
    let json = response.json().await;
    (response.status, response, json)
}

/// A request on a raw socket, so the test can close it whenever it likes: sends `POST path`
/// with `body`, then reads until `marker` appears in what came back. Returns the socket
/// (dropping it closes the connection) and what was read.
pub async fn raw_until(
    addr: std::net::SocketAddr,
    path: &str,
    body: &Value,
    marker: &str,
) -> (TcpStream, String) {
    let body = body.to_string();
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let within = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let n = tokio::time::timeout_at(within, socket.read(&mut buf))
            .await
            .expect("the marker arrives")
            .unwrap();
        assert!(
            n > 0,
            "closed before the marker: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    (socket, String::from_utf8_lossy(&seen).into_owned())
}
