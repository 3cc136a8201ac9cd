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
        self.eof = false;
    }

    /// The next line, `None` at the end of the stream. A last line without `\n` is returned too.
    pub async fn next_line<S: AsyncRead + Unpin>(
        &mut self,
        s: &mut S,
    ) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                if i > MAX_LINE {
                    return Err(ReadError::TooLong);
                }
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_LINE {
                return Err(ReadError::TooLong);
            }
            if self.eof {
                if self.buf.is_empty() {
                    return Ok(None);
                }
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
}
