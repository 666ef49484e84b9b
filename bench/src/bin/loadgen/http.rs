//! A minimal HTTP/1.1 client for engine.io's long-polling: keep-alive requests with
//! `Content-Length` framed answers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpSocket;

/// An answer other than `200`, with its status code.
#[derive(Debug)]
pub struct Status(pub u16);

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "polling answered {}", self.0)
    }
}

impl std::error::Error for Status {}

/// One keep-alive HTTP/1.1 connection, enough for engine.io's polling requests and answers.
pub struct HttpConnection {
    source: IpAddr,
    addr: SocketAddr,
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl HttpConnection {
    pub async fn open(source: IpAddr, addr: SocketAddr) -> std::io::Result<HttpConnection> {
        Ok(HttpConnection {
            source,
            addr,
            stream: Self::connect(source, addr).await?,
            buffer: Vec::new(),
        })
    }

    async fn connect(source: IpAddr, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        socket.set_nodelay(true)?;
        tokio::time::timeout(Duration::from_secs(30), socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }

    /// Sends a request and returns the body of a `200` answer. A server may close a keep-alive
    /// connection that sat idle (between two pongs, say) without reading another request; as a
    /// browser does, the request then goes again on a new connection.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<String> {
        match self.exchange(method, path, body).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionAborted => {
                self.stream = Self::connect(self.source, self.addr).await?;
                self.buffer.clear();
                self.exchange(method, path, body).await
            }
            answer => answer,
        }
    }

    /// One request and its `Content-Length` framed answer. `ConnectionAborted` when the server
    /// closed the connection before answering anything.
    async fn exchange(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!(
            concat!(
                "{method} {path} HTTP/1.1\r\nHost: loadgen\r\n",
                "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
            ),
            body.len(),
            method = method,
            path = path,
            body = body,
        );
        let unanswered =
            || std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "closed unanswered");
        if let Err(error) = self.stream.write_all(request.as_bytes()).await {
            return Err(match error.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    unanswered()
                }
                _ => error,
            });
        }
        let closed = || std::io::Error::other("server closed the connection");
        let head_end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) if self.buffer.is_empty() => return Err(unanswered()),
                Ok(0) => return Err(closed()),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 200") {
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0);
            return Err(std::io::Error::other(Status(status)));
        }
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .ok_or_else(|| std::io::Error::other("an answer without Content-Length"))?;
        while self.buffer.len() < head_end + length {
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(closed());
            }
        }
        let body = String::from_utf8_lossy(&self.buffer[head_end..head_end + length]).into_owned();
        self.buffer.drain(..head_end + length);
        Ok(body)
    }
}
