//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Why a frame could not be read. After any of these the stream is no
/// longer at a frame boundary and the connection must close.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The announced length is over the limit; the body was not read.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A zero-length frame, which no message encodes to.
    #[error("empty frame")]
    Empty,
    /// The stream ended inside a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The rest of a frame did not arrive in time.
    #[error("frame body not received within {0:?}")]
    Timeout(Duration),
    /// The stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Bytes a connection's reader takes from the socket at once. Unbuffered,
/// a frame costs three reads (its first byte, the rest of its length, its
/// body) and a burst of frames three per frame; buffered, a burst costs
/// one. It is also what an idle connection holds for reading: 8 KiB at
/// the default 1,024 connections is 8 MiB.
pub const READ_BUFFER_BYTES: usize = 8 * 1024;

/// The reading half of a connection, buffered for [`read_frame`]. A frame
/// larger than the buffer is read past it, straight into the frame's own
/// allocation, so the bounds of [`read_frame`] are unchanged.
pub fn buffered<R: AsyncRead>(reader: R) -> BufReader<R> {
    BufReader::with_capacity(READ_BUFFER_BYTES, reader)
}

/// Reads one frame's payload. `Ok(None)` is a clean end of stream between
/// frames. Waiting for the first byte of a frame has no timeout (an idle
/// connection is fine); once a frame has begun, its body must arrive within
/// `body_timeout`, so a peer cannot pin a buffer by sending half a frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: u32,
    body_timeout: Duration,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len_buf = [0u8; 4];
    if reader.read(&mut len_buf[..1]).await? == 0 {
        return Ok(None);
    }
    let body = async {
        reader
            .read_exact(&mut len_buf[1..])
            .await
            .map_err(eof_is_truncation)?;
        let len = u32::from_be_bytes(len_buf);
        if len > max {
            return Err(FrameError::TooLarge {
                len: u64::from(len),
                max,
            });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        let mut payload = Vec::new();
        read_body(reader, len as usize, &mut payload).await?;
        Ok(Some(payload))
    };
    tokio::time::timeout(body_timeout, body)
        .await
        .map_err(|_| FrameError::Timeout(body_timeout))?
}

/// How much of a frame's body is allocated before any of it arrives.
/// Frames this small or smaller (nearly all of them) get one allocation
/// of their exact size.
const FIRST_ALLOCATION: usize = 16 * 1024;

/// Reads `len` bytes into `payload`, growing it with the bytes actually
/// received rather than with the length announced: its capacity stays
/// within `max(FIRST_ALLOCATION, 2 × received)` and never exceeds `len`.
/// Announcing 4 MiB is free, so a peer that announces it and then
/// trickles the body must not be able to pin 4 MiB per connection for the
/// frame timeout. Doubling keeps the copies of a large frame linear.
async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    len: usize,
    payload: &mut Vec<u8>,
) -> Result<(), FrameError> {
    payload.reserve_exact(len.min(FIRST_ALLOCATION));
    while payload.len() < len {
        let missing = len - payload.len();
        if payload.len() == payload.capacity() {
            payload.reserve_exact(payload.len().max(1).min(missing));
        }
        let room = (payload.capacity() - payload.len()).min(missing);
        // `take` stops the read at the frame's end (the next frame's bytes
        // stay in the stream) and at the capacity (so `read_buf` never
        // grows the buffer itself).
        let read = (&mut *reader).take(room as u64).read_buf(payload).await?;
        if read == 0 {
            return Err(FrameError::Truncated);
        }
    }
    Ok(())
}

fn eof_is_truncation(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(e)
    }
}

/// Writes an already-encoded frame (length prefix included).
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> io::Result<()> {
    writer.write_all(frame).await
}

/// Writes `frame` into a buffered `writer` and sends what is buffered
/// unless more frames are coming: `queued` says whether the writer's queue
/// holds another. When it is empty, the task first lets the tasks already
/// ready (and the socket events already in) run once, since those are
/// what queues the next answers: a burst of answers then goes out in one
/// send instead of one send each. On loopback a send is the whole TCP
/// path of the receiver too, so this took a 3-node cluster's sends from
/// 4.8 to 0.6 per put (BENCHMARKS.md). The wait is one turn of the
/// scheduler, microseconds when nothing else is ready.
pub async fn write_batched<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
    queued: impl Fn() -> bool,
) -> io::Result<()> {
    write_frame(writer, frame).await?;
    if queued() {
        return Ok(());
    }
    tokio::task::yield_now().await;
    if queued() {
        return Ok(());
    }
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn reads_frames_back_to_back_and_a_clean_end() {
        let data = [0, 0, 0, 2, b'h', b'i', 0, 0, 0, 1, b'!'];
        let mut r = &data[..];
        assert_eq!(
            read_frame(&mut r, 16, T).await.unwrap(),
            Some(b"hi".to_vec())
        );
        assert_eq!(
            read_frame(&mut r, 16, T).await.unwrap(),
            Some(b"!".to_vec())
        );
        assert_eq!(read_frame(&mut r, 16, T).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_its_body_is_read() {
        let data = [0x80, 0, 0, 0];
        let mut r = &data[..];
        let err = read_frame(&mut r, 1024, T).await.unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    len: 0x8000_0000,
                    max: 1024
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn truncated_and_empty_frames_are_errors() {
        let mut r = &[0u8, 0, 0, 9, 1, 2][..];
        assert!(matches!(
            read_frame(&mut r, 16, T).await,
            Err(FrameError::Truncated)
        ));
        let mut r = &[0u8, 0][..];
        assert!(matches!(
            read_frame(&mut r, 16, T).await,
            Err(FrameError::Truncated)
        ));
        let mut r = &[0u8, 0, 0, 0][..];
        assert!(matches!(
            read_frame(&mut r, 16, T).await,
            Err(FrameError::Empty)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_announcing_4_mib_holds_only_what_arrived() {
        const ANNOUNCED: usize = 4 * 1024 * 1024;
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&[1, 2, 3, 4, 5]).await.unwrap();
        let mut payload = Vec::new();
        let stalled = tokio::time::timeout(T, read_body(&mut server, ANNOUNCED, &mut payload));
        assert!(stalled.await.is_err(), "the body never arrives");
        assert_eq!(payload, [1, 2, 3, 4, 5]);
        assert!(
            payload.capacity() <= FIRST_ALLOCATION,
            "{} bytes held for 5 received",
            payload.capacity()
        );

        // Through `read_frame`, the whole stalled frame ends in a timeout.
        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(&(ANNOUNCED as u32).to_be_bytes())
            .await
            .unwrap();
        client.write_all(b"abc").await.unwrap();
        let err = read_frame(&mut server, ANNOUNCED as u32, T)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn the_buffer_grows_with_what_arrives_and_never_past_the_frame() {
        let len = 300 * 1024 + 7;
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        // A small pipe hands the body over in many pieces.
        let (mut client, mut server) = tokio::io::duplex(1000);
        let sent = body.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&(len as u32).to_be_bytes()).await.unwrap();
            for piece in sent.chunks(4093) {
                client.write_all(piece).await.unwrap();
            }
            // The next frame is left for the next read.
            client.write_all(&[0, 0, 0, 1, b'!']).await.unwrap();
        });
        let first = read_frame(&mut server, len as u32, T).await.unwrap();
        let first = first.expect("a frame");
        assert_eq!(first, body);
        assert!(first.capacity() <= len, "{} > {len}", first.capacity());
        assert_eq!(
            read_frame(&mut server, len as u32, T).await.unwrap(),
            Some(b"!".to_vec())
        );
        writer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_frame_body_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 0, 10, 1]).await.unwrap();
        let err = read_frame(&mut server, 16, T).await.unwrap_err();
        assert!(matches!(err, FrameError::Timeout(_)), "{err}");
    }

    /// A reader that hands over everything it has left on each read, as a
    /// socket does with a burst that has arrived, and counts the reads.
    struct Burst {
        data: Vec<u8>,
        at: usize,
        reads: usize,
    }

    impl AsyncRead for Burst {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            self.reads += 1;
            let n = buf.remaining().min(self.data.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn burst(frames: &[Vec<u8>]) -> Burst {
        let mut data = Vec::new();
        for f in frames {
            data.extend_from_slice(&(f.len() as u32).to_be_bytes());
            data.extend_from_slice(f);
        }
        Burst {
            data,
            at: 0,
            reads: 0,
        }
    }

    #[tokio::test]
    async fn a_burst_of_frames_is_one_read_from_the_socket_when_buffered() {
        let frames: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 100]).collect();
        let mut unbuffered = burst(&frames);
        let mut buffered = buffered(burst(&frames));
        for f in &frames {
            assert_eq!(
                read_frame(&mut unbuffered, 1024, T).await.unwrap().as_ref(),
                Some(f)
            );
            assert_eq!(
                read_frame(&mut buffered, 1024, T).await.unwrap().as_ref(),
                Some(f)
            );
        }
        assert_eq!(read_frame(&mut buffered, 1024, T).await.unwrap(), None);
        // Unbuffered: the first byte, the rest of the length, the body.
        assert_eq!(unbuffered.reads, 150);
        // Buffered: the burst, then the end of the stream.
        assert_eq!(buffered.get_ref().reads, 2);
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_read_buffer_is_read_whole() {
        let big = (0..3 * READ_BUFFER_BYTES)
            .map(|i| i as u8)
            .collect::<Vec<_>>();
        let frames = vec![vec![1, 2, 3], big.clone(), vec![4]];
        let mut r = buffered(burst(&frames));
        for f in &frames {
            let got = read_frame(&mut r, big.len() as u32, T).await.unwrap();
            assert_eq!(got.as_ref(), Some(f));
        }
        assert_eq!(read_frame(&mut r, 16, T).await.unwrap(), None);
    }

    /// A writer that counts the writes that reach it (the sends).
    #[derive(Clone, Default)]
    struct Sends(std::sync::Arc<std::sync::Mutex<(usize, Vec<u8>)>>);

    impl AsyncWrite for Sends {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let mut sent = self.0.lock().unwrap();
            sent.0 += 1;
            sent.1.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn answers_made_ready_together_go_out_in_one_send() {
        const ANSWERS: usize = 21;
        let sends = Sends::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        let mut writer = tokio::io::BufWriter::new(sends.clone());
        let written = tokio::spawn(async move {
            for _ in 0..ANSWERS {
                let frame = rx.recv().await.unwrap();
                write_batched(&mut writer, &frame, || !rx.is_empty())
                    .await
                    .unwrap();
            }
        });
        // Twenty more answers whose handlers become ready at the same
        // moment as the writer is woken for the first one, after it.
        let (gate, opened) = tokio::sync::watch::channel(());
        let producers: Vec<_> = (1..ANSWERS as u8)
            .map(|i| {
                let (tx, mut opened) = (tx.clone(), opened.clone());
                tokio::spawn(async move {
                    opened.changed().await.unwrap();
                    tx.send(vec![0, 0, 0, 1, i]).await.unwrap();
                })
            })
            .collect();
        // Let the writer and the producers reach their waits.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        tx.send(vec![0, 0, 0, 1, 0]).await.unwrap();
        gate.send(()).unwrap();
        written.await.unwrap();
        for p in producers {
            p.await.unwrap();
        }
        let sent = sends.0.lock().unwrap();
        assert_eq!(sent.1.len(), ANSWERS * 5);
        // Flushing as soon as the queue is empty sends the first answer
        // alone, then the other twenty.
        assert_eq!(sent.0, 1, "answers went out in {} sends", sent.0);
    }
}
