//! A viewer's connection, whatever its transport: a TCP socket, or TLS over one once its
//! handshake is done (`tls.rs` accepts it; on the HTTP port hyper answers the request first).
//! It offers what a viewer's session does to a socket, without waiting: read what is there,
//! write what the socket takes, be told when it can do either. Over TLS, a read decrypts what
//! the socket holds (and answers what TLS itself asks, such as a key update), and a write
//! encrypts into rustls' buffer (bounded by its 64 KiB limit) and sends what the socket takes;
//! what is encrypted but not sent yet goes out before anything written later.
//!
//! A TLS viewer is followed in a task for its whole life and never parked: a shard writes the
//! same bytes to every member, and a TLS member would need its own encryption (and the
//! connection's state, a few KiB, kept per member); BENCHMARKS.md, "TLS", measures the cost.

use std::io::{self, IoSlice, Read, Write};
use std::task::{Context, Poll};

use rustls::ServerConnection;
use tokio::net::TcpStream;

/// A viewer's connection.
pub(crate) enum Conn {
    Plain(TcpStream),
    /// Boxed: a plain viewer's state stays the size of a socket.
    Tls(Box<TlsConn>),
}

/// A TLS connection after its handshake: the socket and rustls' state of it.
pub(crate) struct TlsConn {
    tcp: TcpStream,
    tls: ServerConnection,
}

impl Conn {
    /// A TLS connection whose handshake is done (`tls` holds what it read past it).
    pub(crate) fn tls(tcp: TcpStream, tls: ServerConnection) -> Conn {
        Conn::Tls(Box::new(TlsConn { tcp, tls }))
    }

    /// The socket under it (for socket options).
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(c) => &c.tcp,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    /// Can a shard take it? Only a plain socket: a shard writes the same bytes to all.
    pub(crate) fn parkable(&self) -> bool {
        matches!(self, Conn::Plain(_))
    }

    /// Reads what the viewer sent, without waiting: `WouldBlock` when nothing is there, `Ok(0)`
    /// once the viewer closed.
    pub(crate) fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(tcp) => tcp.try_read(buf),
            Conn::Tls(c) => c.try_read(buf),
        }
    }

    /// Ready once [`Conn::try_read`] may have something (or the end) to give.
    pub(crate) fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Conn::Plain(tcp) => tcp.poll_read_ready(cx),
            // Decrypted and not read yet, or the viewer's close_notify: no need to wait.
            Conn::Tls(c) if !c.tls.wants_read() => Poll::Ready(Ok(())),
            Conn::Tls(c) => c.tcp.poll_read_ready(cx),
        }
    }

    /// Ready once the socket may take bytes again.
    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_write_ready(cx)
    }

    /// Reads what the viewer sent, waiting for it; `Ok(0)` once it closed.
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::future::poll_fn(|cx| self.poll_read_ready(cx)).await?;
                }
                read => return read,
            }
        }
    }

    /// Writes from `bufs` without waiting; `WouldBlock` when nothing was taken. Over TLS,
    /// "taken" is encrypted: call [`Conn::try_flush`] until it says all is sent.
    pub(crate) fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Conn::Plain(tcp) => tcp.try_write_vectored(bufs),
            Conn::Tls(c) => {
                c.try_flush()?;
                match c.tls.writer().write_vectored(bufs)? {
                    // rustls' buffer is full: the socket has not taken what is in it.
                    0 if bufs.iter().any(|b| !b.is_empty()) => {
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                    n => Ok(n),
                }
            }
        }
    }

    /// Sends what TLS holds encrypted, without waiting: `Ok(true)` once all of it is out (a
    /// plain socket holds nothing), `Ok(false)` when the socket is full.
    pub(crate) fn try_flush(&mut self) -> io::Result<bool> {
        match self {
            Conn::Plain(_) => Ok(true),
            Conn::Tls(c) => c.try_flush(),
        }
    }

    /// The socket to close, after telling a TLS viewer the connection ends (close_notify, sent
    /// if the socket takes it now: the close that follows must not wait on a full socket).
    pub(crate) fn finish(self) -> TcpStream {
        match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(mut c) => {
                c.tls.send_close_notify();
                let _ = c.try_flush();
                c.tcp
            }
        }
    }
}

impl From<TcpStream> for Conn {
    fn from(tcp: TcpStream) -> Conn {
        Conn::Plain(tcp)
    }
}

impl TlsConn {
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                // Plaintext, or the end after the viewer's close_notify (`Ok(0)`).
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket's end without a close_notify: the viewer hung up all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // Nothing decrypted: read what the socket holds (`WouldBlock` ends it here).
            if self.tls.read_tls(&mut Socket(&self.tcp))? == 0 {
                // The socket's end: the reader says whether it came after a close_notify.
                continue;
            }
            if let Err(e) = self.tls.process_new_packets() {
                // Sends the alert that says why, if the socket takes it now.
                let _ = self.try_flush();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // What TLS answers by itself (a key update) goes now, or before the next write.
            self.try_flush()?;
        }
    }

    fn try_flush(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut Socket(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// A tokio socket as rustls reads and writes it: non-blocking, through tokio, so that a
/// `WouldBlock` clears the readiness tokio holds for it and the next wait is a real one.
struct Socket<'a>(&'a TcpStream);

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
