//! The examples' shared layout: one single-threaded runtime per core, each accepting on its own
//! `SO_REUSEPORT` socket, as the data plane's workers do.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Accepts on `listen` on every core and hands each connection (no-delay set) to `serve`.
pub fn serve_on_every_core<F, Fut>(listen: SocketAddr, serve: F) -> anyhow::Result<()>
where
    F: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let serve = serve.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let socket =
                        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                    socket.set_reuse_port(true)?;
                    socket.set_nonblocking(true)?;
                    socket.bind(&listen.into())?;
                    socket.listen(1024)?;
                    let listener = TcpListener::from_std(socket.into())?;
                    loop {
                        let (stream, _) = listener.accept().await?;
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve.clone()(stream));
                    }
                })
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    Ok(())
}
