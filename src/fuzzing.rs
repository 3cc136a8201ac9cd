//! Entry points for the cargo-fuzz targets in `fuzz/` (and their smoke test): each feeds bytes
//! to exactly the code a probe or a config load runs, and checks what must hold whatever the
//! input. Not an API; hidden from the docs.

use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;

/// A config file: loading never panics, and a file that loads prints (`/config`) without
/// panicking.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = crate::config::parse(text, Path::new("fuzz.yml")) {
        let _ = c.to_yaml();
    }
}

/// A web config file (`--web.config.file`): parsing never panics.
pub fn web_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::web::config::parse(text, Path::new("web.yml"));
    }
}

/// A DNS reply: decoding never panics.
pub fn dns_reply(data: &[u8]) {
    let _ = crate::probe::dns::decode_reply_for_fuzzing(data);
}

/// `query_response`'s line reader over `data` read in pieces of the sizes the first byte picks:
/// every line it returns is at most `MAX_LINE` bytes and holds no `\n`, and the lines with
/// their endings are the input (less the dropped `\r`s) up to where it stopped.
pub fn lines(data: &[u8]) {
    use crate::probe::query_response::{LineReader, MAX_LINE};
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let mut reader = Pieces {
        data: rest,
        piece: usize::from(piece).max(1),
    };
    let mut lines = LineReader::default();
    let mut total = 0usize;
    loop {
        let next = futures_util::FutureExt::now_or_never(lines.next_line(&mut reader))
            .expect("a reader over memory never waits");
        match next {
            Ok(Some(line)) => {
                assert!(line.len() <= MAX_LINE, "line of {} bytes", line.len());
                assert!(!line.contains(&b'\n'));
                total += line.len();
                assert!(total <= rest.len());
            }
            Ok(None) | Err(_) => break,
        }
    }
}

/// An `AsyncRead` over memory handing out at most `piece` bytes per read.
struct Pieces<'a> {
    data: &'a [u8],
    piece: usize,
}

impl tokio::io::AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.piece.min(self.data.len()).min(buf.remaining());
        let (head, tail) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = tail;
        std::task::Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

fn http_specs() -> &'static [crate::probe::http::Spec] {
    static SPECS: OnceLock<Vec<crate::probe::http::Spec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        ["gzip", "deflate", "br", "identity"]
            .iter()
            .flat_map(|c| {
                [
                    format!("compression: {c}\nbody_size_limit: 1MB\n"),
                    format!(
                        "compression: {c}\nbody_size_limit: 1MB\nfail_if_body_not_matches_regexp: ['ok\\b']\n"
                    ),
                ]
            })
            .map(|yaml| {
                let section: crate::probe::http::Section =
                    serde_norway::from_str(&yaml).expect("fuzz section");
                crate::probe::http::Spec::build(&section, Path::new(".")).expect("fuzz spec")
            })
            .collect()
    })
}

/// An HTTP body, decoded by each of gzip, deflate, brotli and identity under a 1 MiB
/// `body_size_limit`, without and with a body regex, in chunks of the sizes the first byte
/// picks: never panics, never counts past the limit, and identity counts the body exactly.
pub fn http_body(data: &[u8]) {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let chunks: Vec<Bytes> = rest.chunks(piece).map(Bytes::copy_from_slice).collect();
    for (i, spec) in http_specs().iter().enumerate() {
        let (_, counted) = runtime().block_on(crate::probe::http::read_body_for_fuzzing(
            spec,
            chunks.clone(),
        ));
        assert!(
            (0.0..=(1 << 20) as f64).contains(&counted),
            "counted {counted} past the limit"
        );
        // Identity counts what arrived, up to the limit.
        if i >= 6 {
            assert_eq!(counted, rest.len().min(1 << 20) as f64);
        }
    }
}

/// A DER certificate: reading its facts never panics.
pub fn certificate(data: &[u8]) {
    let _ = crate::probe::tls::CertFacts::parse(data);
}

static FUZZ_FAMILY: crate::probe::report::Family = crate::probe::report::Family::gauge(
    "probe_fuzz",
    "A family for the text encoder's fuzz target.",
);

/// The text encoder with label values and a value from `data`: every line of the output is a
/// comment or `name{…} value`, one per series, so no label value can break out of its quotes.
pub fn text_encoder(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{0}');
    let (a, b) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let value = parts
        .next()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(1.0);
    let mut r = crate::probe::report::Report::new();
    r.set_labeled(&FUZZ_FAMILY, &[("a", a), ("b", b)], value);
    let user: Vec<(String, String)> = vec![("instance".into(), b.to_owned())];
    let out = crate::metrics::encode_text(&[(&user, &r)]);
    let series: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(series.len(), 1, "{out}");
    assert!(series[0].starts_with("probe_fuzz{"), "{out}");
    assert!(out.ends_with('\n'));
}

#[cfg(test)]
mod tests {
    //! The fuzz targets' smoke test on stable: each entry point over hand-made inputs and the
    //! corpus seeds in `fuzz/corpus` (what `cargo fuzz` starts from).

    use super::*;

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Vec::new());
        out.push(vec![0xff; 64]);
        out
    }

    #[test]
    fn every_target_takes_its_seeds() {
        for s in seeds("config") {
            config(&s);
        }
        for s in seeds("web_config") {
            web_config(&s);
        }
        for s in seeds("dns_reply") {
            dns_reply(&s);
        }
        for s in seeds("lines") {
            lines(&s);
        }
        for s in seeds("http_body") {
            http_body(&s);
        }
        for s in seeds("certificate") {
            certificate(&s);
        }
        for s in seeds("text_encoder") {
            text_encoder(&s);
        }
    }

    #[test]
    fn the_text_encoder_escapes_what_would_break_a_line() {
        text_encoder(b"a\"b\\c\nd\0x\ny\r\0 42");
    }

    #[test]
    fn a_gzip_body_is_counted_to_its_limit() {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&vec![b'o'; 3 << 20]).unwrap();
        let mut input = vec![200u8];
        input.extend(e.finish().unwrap());
        http_body(&input);
    }
}
