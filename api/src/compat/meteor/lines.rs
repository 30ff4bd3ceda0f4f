//! The controller's input, one line at a time, each bounded in length.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;

/// What the next line turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A whole line without its `\n` or `\r\n`.
    Text(Bytes),
    /// A line longer than allowed. Nothing of it is kept: it was read to
    /// its end and dropped, so the next line starts clean.
    TooLong,
}

/// Lines read from `reader`; commands sent together come out one by one.
pub(crate) struct Lines<R> {
    reader: R,
    buffer: BytesMut,
    /// Bytes of `buffer` already searched for a newline.
    searched: usize,
    /// Inside a line that is too long: reading to its end.
    discarding: bool,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    pub(crate) fn new(reader: R) -> Self {
        Self {
            reader,
            buffer: BytesMut::new(),
            searched: 0,
            discarding: false,
        }
    }

    /// The next line of at most `max` bytes (its end not counted); `None`
    /// once the peer has closed. A last line with no end is dropped: the
    /// peer did not finish the command.
    pub(crate) async fn next(&mut self, max: usize) -> std::io::Result<Option<Line>> {
        loop {
            if let Some(at) = self.buffer[self.searched..]
                .iter()
                .position(|&byte| byte == b'\n')
            {
                let end = self.searched + at;
                let mut line = self.buffer.split_to(end + 1);
                self.searched = 0;
                if std::mem::take(&mut self.discarding) {
                    return Ok(Some(Line::TooLong));
                }
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                if line.len() > max {
                    return Ok(Some(Line::TooLong));
                }
                return Ok(Some(Line::Text(line.freeze())));
            }
            if self.buffer.len() > max + 1 {
                // No end in sight within the bound: forget what came so far.
                self.buffer.clear();
                self.discarding = true;
            }
            self.searched = self.buffer.len();
            self.buffer.reserve(READ_CHUNK);
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], max: usize) -> Vec<Line> {
        let mut lines = Lines::new(input);
        let mut out = Vec::new();
        while let Some(line) = lines.next(max).await.unwrap() {
            out.push(line);
        }
        out
    }

    fn text(line: &str) -> Line {
        Line::Text(Bytes::copy_from_slice(line.as_bytes()))
    }

    #[tokio::test]
    async fn splits_on_lf_and_crlf_and_drops_an_unfinished_last_line() {
        assert_eq!(
            all(b"QUIT\nSHOWSTATS\r\n\nhalf", 100).await,
            [text("QUIT"), text("SHOWSTATS"), text("")]
        );
    }

    #[tokio::test]
    async fn a_long_line_is_refused_whole_and_the_next_one_read() {
        let mut input = vec![b'x'; 50_000];
        input.extend_from_slice(b"\nQUIT\n");
        assert_eq!(all(&input, 1000).await, [Line::TooLong, text("QUIT")]);
        // Just over the bound, within one read.
        assert_eq!(
            all(b"12345\n1234\n", 4).await,
            [Line::TooLong, text("1234")]
        );
    }
}
