//! The send/expect dialogue of blackbox's `query_response`, over any stream, with a bounded line
//! reader: lines end at `\n` (a trailing `\r` is dropped) and may be at most 64 KiB, the limit of
//! Go's `bufio.Scanner` that blackbox reads with.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest line accepted, as Go's `bufio.MaxScanTokenSize`.
pub const MAX_LINE: usize = 64 * 1024;

/// Reads lines from a stream, keeping what it read past the line for the next call.
#[derive(Debug, Default)]
pub struct LineReader {
    buf: Vec<u8>,
    /// How many bytes at the start of `buf` are known to hold no `\n`: each byte is searched
    /// once, so a line arriving a byte per read costs linear time, not quadratic.
    scanned: usize,
    eof: bool,
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// A line longer than `MAX_LINE`.
    TooLong,
    /// The stream failed.
    Io(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLong => write!(f, "line longer than {MAX_LINE} bytes"),
            ReadError::Io(e) => f.write_str(e),
        }
    }
}

impl LineReader {
    /// Forgets buffered data (after a STARTTLS upgrade, as blackbox starts a new scanner).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.eof = false;
    }

    /// The next line, `None` at the end of the stream. A last line without `\n` is returned too.
    pub async fn next_line<S: AsyncRead + Unpin>(
        &mut self,
        s: &mut S,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            if let Some(i) = self.buf[self.scanned..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|k| self.scanned + k)
            {
                if i > MAX_LINE {
                    return Err(ReadError::TooLong);
                }
                self.scanned = 0;
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_LINE {
                return Err(ReadError::TooLong);
            }
            if self.eof {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                self.scanned = 0;
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            let mut chunk = [0u8; 4096];
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| ReadError::Io(e.to_string()))?;
            if n == 0 {
                self.eof = true;
            } else {
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }

    /// Reads up to `n` bytes with one read, as blackbox's `expect_bytes` does (buffered bytes
    /// first).
    pub async fn read_bytes<S: AsyncRead + Unpin>(
        &mut self,
        s: &mut S,
        n: usize,
    ) -> Result<Vec<u8>, ReadError> {
        if self.buf.is_empty() {
            let mut data = vec![0u8; n.min(MAX_LINE)];
            let got = s
                .read(&mut data)
                .await
                .map_err(|e| ReadError::Io(e.to_string()))?;
            data.truncate(got);
            return Ok(data);
        }
        let take = n.min(self.buf.len());
        self.scanned = self.scanned.saturating_sub(take);
        Ok(self.buf.drain(..take).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn lines_are_split_and_bounded() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(b"220 hello\r\n250-one\n250 two").await.unwrap();
        drop(a);
        let mut r = LineReader::default();
        assert_eq!(r.next_line(&mut b).await.unwrap().unwrap(), b"220 hello");
        assert_eq!(r.next_line(&mut b).await.unwrap().unwrap(), b"250-one");
        assert_eq!(r.next_line(&mut b).await.unwrap().unwrap(), b"250 two");
        assert_eq!(r.next_line(&mut b).await.unwrap(), None);

        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(&vec![b'x'; MAX_LINE + 10]).await.unwrap();
        let mut r = LineReader::default();
        assert_eq!(r.next_line(&mut b).await.unwrap_err(), ReadError::TooLong);
    }

    /// Reads one byte at a time, as a target dripping its answer makes a socket do.
    struct Drip<'a>(&'a [u8]);

    impl AsyncRead for Drip<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if let Some((first, rest)) = self.0.split_first() {
                buf.put_slice(&[*first]);
                self.0 = rest;
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Found by the `lines` fuzz target: each read searched the whole buffer again, so a 64 KiB
    /// line dripped a byte per read cost about 2·10⁹ comparisons; and a line ending past
    /// `MAX_LINE` in the same read as the limit was let through.
    #[tokio::test]
    async fn a_dripped_line_is_searched_once_and_its_length_is_checked_where_it_ends() {
        let mut input = vec![b'x'; MAX_LINE];
        input.extend_from_slice(b"\nnext\n");
        input.extend(vec![b'y'; MAX_LINE + 1]);
        input.push(b'\n');
        let mut src = Drip(&input);
        let mut r = LineReader::default();
        assert_eq!(
            r.next_line(&mut src).await.unwrap().unwrap().len(),
            MAX_LINE
        );
        // Nothing buffered: read_bytes makes one read (one byte here); the rest is a line.
        assert_eq!(r.read_bytes(&mut src, 2).await.unwrap(), b"n");
        assert_eq!(r.next_line(&mut src).await.unwrap().unwrap(), b"ext");
        assert_eq!(r.next_line(&mut src).await.unwrap_err(), ReadError::TooLong);
        // Bytes searched and still buffered, then taken by read_bytes: the rest is searched.
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(b"abc").await.unwrap();
        let mut r = LineReader::default();
        let pending = futures_util::FutureExt::now_or_never(r.next_line(&mut b));
        assert!(pending.is_none(), "no line yet");
        assert_eq!(r.read_bytes(&mut b, 2).await.unwrap(), b"ab");
        a.write_all(b"d\n").await.unwrap();
        assert_eq!(r.next_line(&mut b).await.unwrap().unwrap(), b"cd");
        // One read holding a line of MAX_LINE + 1 bytes and its end.
        let mut long = vec![b'z'; MAX_LINE + 1];
        long.push(b'\n');
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(&long).await.unwrap();
        let mut r = LineReader::default();
        assert_eq!(r.next_line(&mut b).await.unwrap_err(), ReadError::TooLong);
    }
}
