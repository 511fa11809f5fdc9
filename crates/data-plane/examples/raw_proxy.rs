//! Experiment: the ceiling of a hand-rolled HTTP/1 proxy (httparse, one upstream connection per
//! client connection, Content-Length bodies only). Not the product; a yardstick for the bench.
//! `cargo run --release -p data-plane --example raw_proxy -- 127.0.0.1:7501 127.0.0.1:UPSTREAM`

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "common/mod.rs"]
mod common;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7501".into())
        .parse()?;
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:7070".into());
    common::serve_on_every_core(listen, move |stream| {
        let upstream = upstream.clone();
        async move {
            let _ = conn(stream, &upstream).await;
        }
    })
}

fn content_length(headers: &[httparse::Header<'_>]) -> usize {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

async fn conn(mut client: TcpStream, upstream: &str) -> anyhow::Result<()> {
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut ubuf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(4096);
    let mut filled = 0;
    loop {
        // Request head.
        let (head_len, path_range) = loop {
            let n = client.read(&mut buf[filled..]).await?;
            if n == 0 {
                return Ok(());
            }
            filled += n;
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut hs);
            if let httparse::Status::Complete(len) = req.parse(&buf[..filled])? {
                let path = req.path.unwrap_or("/");
                let start = path.as_ptr() as usize - buf.as_ptr() as usize;
                out.clear();
                out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
                out.push(b' ');
                // Strip "/bench/up" style two-segment prefix.
                let rest = path.splitn(4, '/').nth(3).unwrap_or("");
                out.push(b'/');
                out.extend_from_slice(rest.as_bytes());
                out.extend_from_slice(b" HTTP/1.1\r\n");
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("x-api-key") {
                        continue;
                    }
                    out.extend_from_slice(h.name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(h.value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"x-gateway-tenant: bench\r\n\r\n");
                break (len, start..start + path.len());
            }
        };
        let _ = path_range;
        up.write_all(&out).await?;
        filled -= head_len;
        buf.copy_within(head_len..head_len + filled, 0);
        // Response head.
        let mut ufilled = 0;
        let (rhead, body_len) = loop {
            let n = up.read(&mut ubuf[ufilled..]).await?;
            if n == 0 {
                anyhow::bail!("upstream closed");
            }
            ufilled += n;
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut hs);
            if let httparse::Status::Complete(len) = resp.parse(&ubuf[..ufilled])? {
                break (len, content_length(resp.headers));
            }
        };
        while ufilled < rhead + body_len {
            let n = up.read(&mut ubuf[ufilled..]).await?;
            if n == 0 {
                anyhow::bail!("upstream closed");
            }
            ufilled += n;
        }
        client.write_all(&ubuf[..rhead + body_len]).await?;
    }
}
