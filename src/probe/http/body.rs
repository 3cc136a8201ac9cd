//! Reading a response body: decompression, `body_size_limit`, the bounded buffer kept for regex
//! matching, and the byte count blackbox reports as `probe_http_uncompressed_body_length`.

use std::io;

use async_compression::tokio::bufread::{BrotliDecoder, DeflateDecoder, GzipDecoder};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio_util::io::StreamReader;

use super::{Compression, DEFAULT_MATCH_LIMIT, PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH, Spec};
use crate::probe::prober::{FailureKind, ProbeFailure, Reason};
use crate::probe::report::Report;

/// What reading the body found.
pub(super) struct Outcome {
    /// The regex verdict when matching was asked for and the body could be read.
    pub matched: Option<Result<(), String>>,
    /// Why reading failed (size limit, broken stream, bad compression).
    pub error: Option<ProbeFailure>,
    /// The body as kept for matching (empty when nothing was to be matched or it was too big).
    pub kept: Vec<u8>,
}

/// Evaluates the body regexes on `body`; `Err` names the expression that failed.
pub(super) fn match_regexes(spec: &Spec, body: &[u8]) -> Result<(), String> {
    match_lists(&spec.body_matches, &spec.body_not_matches, body)
}

/// Bodies up to this size are matched on the probe's own task; larger ones on a blocking
/// thread, so a slow expression on a large body neither stalls a worker nor runs past the
/// probe's deadline (the probe stops waiting for it there).
const INLINE_MATCH: usize = 256 * 1024;

fn match_lists(
    matches: &[crate::values::Regex],
    not_matches: &[crate::values::Regex],
    body: &[u8],
) -> Result<(), String> {
    for re in matches {
        if re.bytes.is_match(body) {
            return Err(format!("body matched regular expression {:?}", re.as_str()));
        }
    }
    for re in not_matches {
        if !re.bytes.is_match(body) {
            return Err(format!(
                "body did not match regular expression {:?}",
                re.as_str()
            ));
        }
    }
    Ok(())
}

/// Reads the whole body (decompressed when configured), counting bytes into the report as they
/// arrive so a timeout keeps the count. Memory stays bounded: only the bytes needed for regex
/// matching are kept, at most `body_size_limit` (or `DEFAULT_MATCH_LIMIT`).
pub(super) async fn read(
    spec: &Spec,
    body: super::client::Body,
    match_body: bool,
    report: &mut Report,
) -> Outcome {
    read_stream(spec, body.into_data_stream(), match_body, report).await
}

/// `read` over any stream of body chunks (the fuzz target's seam).
pub(super) async fn read_stream<S>(
    spec: &Spec,
    stream: S,
    match_body: bool,
    report: &mut Report,
) -> Outcome
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, io::Error>> + Send + Unpin,
{
    let raw = StreamReader::new(stream);
    let mut reader: Box<dyn AsyncRead + Send + Unpin> = match spec.compression {
        None | Some(Compression::Identity) => Box::new(raw),
        Some(Compression::Gzip) => {
            let mut d = GzipDecoder::new(BufReader::new(raw));
            d.multiple_members(true);
            Box::new(d)
        }
        Some(Compression::Deflate) => Box::new(DeflateDecoder::new(BufReader::new(raw))),
        Some(Compression::Br) => Box::new(BrotliDecoder::new(BufReader::new(raw))),
    };
    let limit = spec.body_size_limit;
    let keep_limit = if match_body {
        limit.unwrap_or(DEFAULT_MATCH_LIMIT)
    } else {
        0
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut count: u64 = 0;
    let mut too_big_to_match = false;
    // Filled through `read_buf`, which writes into spare capacity: a zeroed 16 KiB buffer cost a
    // calloc and a memset per probe for bodies that are mostly a few bytes.
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut error = None;
    loop {
        // Decompressing a bomb from a fast server is all ready work: without spending the
        // task's budget, the loop would not yield until the body ends, and the probe's
        // deadline (checked only when its future yields) would pass unnoticed.
        tokio::task::coop::consume_budget().await;
        buf.clear();
        match reader.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                let mut n = n as u64;
                let mut over_limit = false;
                if let Some(l) = limit
                    && count + n > l
                {
                    n = l - count;
                    over_limit = true;
                }
                let chunk = &buf[..n as usize];
                if match_body && !too_big_to_match {
                    if kept.len() as u64 + n <= keep_limit {
                        kept.extend_from_slice(chunk);
                    } else {
                        too_big_to_match = true;
                        kept = Vec::new();
                    }
                }
                count += n;
                report.set(&PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH, count as f64);
                if over_limit {
                    error = Some(
                        ProbeFailure::new(
                            FailureKind::Protocol,
                            format!(
                                "response body larger than body_size_limit ({} bytes)",
                                limit.unwrap_or(0)
                            ),
                        )
                        .because(Reason::BodyTooLarge),
                    );
                    break;
                }
            }
            Err(e) => {
                error = Some(ProbeFailure::new(
                    FailureKind::Protocol,
                    format!("failed to read HTTP response body: {e}"),
                ));
                break;
            }
        }
    }
    report.set(&PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH, count as f64);
    let matched = if !match_body || error.is_some() {
        None
    } else if too_big_to_match {
        error = Some(
            ProbeFailure::new(
                FailureKind::Protocol,
                format!(
                    "response body larger than {keep_limit} bytes cannot be matched against regular expressions; set body_size_limit to allow more"
                ),
            )
            .because(Reason::BodyTooLarge),
        );
        None
    } else if kept.len() <= INLINE_MATCH {
        Some(match_regexes(spec, &kept))
    } else {
        let (m, nm) = (spec.body_matches.clone(), spec.body_not_matches.clone());
        let (result, back) = tokio::task::spawn_blocking(move || {
            let r = match_lists(&m, &nm, &kept);
            (r, kept)
        })
        .await
        .unwrap_or_else(|e| (Err(format!("matching the body failed: {e}")), Vec::new()));
        kept = back;
        Some(result)
    };
    Outcome {
        matched,
        error,
        kept,
    }
}
