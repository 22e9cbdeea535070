//! gzip bodies joined from parts compressed one at a time (RFC 1951, 1952).
//!
//! Each part of an exposition is deflated on its own and ends on a byte
//! boundary with no final block (a sync flush), so the deflated parts can be
//! laid end to end in any combination; one empty final block closes the
//! stream. The CRC-32 of the whole is combined from the parts' CRCs. So a
//! part that did not change (1,000 PVCs' text when only the node's
//! filesystems changed) is compressed once, not on every new snapshot.

use flate2::{Compress, Compression, FlushCompress};

/// One part of a body, deflated.
#[derive(Debug, Clone, Default)]
pub struct Deflated {
    /// Raw deflate blocks, none final, ending on a byte boundary.
    data: Vec<u8>,
    /// The CRC-32 and length of the text they hold.
    crc: crc32fast::Hasher,
}

/// The ten bytes before the blocks: the magic, deflate, no flags, no
/// modification time, no extra flags, an unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A final fixed-Huffman block holding nothing but its end: BFINAL 1, BTYPE
/// 01, end-of-block code 0000000, then padding to the byte.
const LAST_BLOCK: [u8; 2] = [0x03, 0x00];

impl Deflated {
    /// `text` deflated as fast as flate2 goes (as the whole body was before),
    /// with a compressor of its own.
    pub fn of(text: &[u8]) -> std::io::Result<Deflated> {
        Deflater::default().deflate(text)
    }

    /// The length of the text it holds.
    pub fn text_len(&self) -> u64 {
        self.crc.total_len()
    }

    /// The length of its blocks.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// One gzip member holding the texts of `parts`, in order.
pub fn member<'p>(parts: impl IntoIterator<Item = &'p Deflated> + Clone) -> Vec<u8> {
    let blocks: usize = parts.clone().into_iter().map(Deflated::len).sum();
    let mut out = Vec::with_capacity(HEADER.len() + blocks + LAST_BLOCK.len() + 8);
    out.extend_from_slice(&HEADER);
    let mut crc = crc32fast::Hasher::new();
    for part in parts {
        out.extend_from_slice(&part.data);
        crc.combine(&part.crc);
    }
    out.extend_from_slice(&LAST_BLOCK);
    // ISIZE is the length modulo 2^32 (RFC 1952).
    let len = crc.total_len() as u32;
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out
}

/// Deflates parts one after another with one compressor, reset between
/// them, so each part is what a fresh compressor makes of it (no part
/// refers to another's text). A compressor is a few hundred KB: made anew
/// for each part that changed, it cost fresh pages (page faults, zeroing)
/// several times per scrape, 6% of kubedf's CPU at rest at N = 0.
#[derive(Default)]
pub struct Deflater {
    compress: Option<Compress>,
}

impl Deflater {
    /// `text` deflated as fast as flate2 goes, ended by a sync flush.
    pub fn deflate(&mut self, text: &[u8]) -> std::io::Result<Deflated> {
        let mut crc = crc32fast::Hasher::new();
        crc.update(text);
        let mut data = Vec::new();
        if !text.is_empty() {
            let compress = self
                .compress
                .get_or_insert_with(|| Compress::new(Compression::fast(), false));
            compress.reset();
            data.reserve(text.len() / 8 + 64);
            loop {
                let done = usize::try_from(compress.total_in()).unwrap_or(usize::MAX);
                compress
                    .compress_vec(
                        &text[done.min(text.len())..],
                        &mut data,
                        FlushCompress::Sync,
                    )
                    .map_err(std::io::Error::other)?;
                // Done once every byte is in and the flush did not fill the
                // buffer (a full buffer may hold back the flush's end).
                if compress.total_in() == text.len() as u64 && data.len() < data.capacity() {
                    break;
                }
                data.reserve(data.capacity().max(64));
            }
            data.shrink_to_fit();
        }
        Ok(Deflated { data, crc })
    }
}

/// `text` gzipped in one part.
pub fn gzip(text: &[u8]) -> std::io::Result<Vec<u8>> {
    Ok(member([&Deflated::of(text)?]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Read as _;

    fn gunzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        // MultiGzDecoder would hide a second member; one is expected.
        let mut decoder = flate2::read::GzDecoder::new(body);
        decoder.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn parts_joined_in_any_order_are_one_valid_member() {
        let a = "kubelet_volume_stats_capacity_bytes{namespace=\"a\"} 1\n".repeat(2_000);
        let b = "# HELP x y\n".to_owned();
        let c = String::new();
        let parts: Vec<Deflated> = [&a, &b, &c]
            .iter()
            .map(|t| Deflated::of(t.as_bytes()).unwrap())
            .collect();
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 0, 1]] {
            let body = member(order.iter().map(|&i| &parts[i]));
            let texts = [&a, &b, &c];
            let want: String = order.iter().map(|&i| texts[i].as_str()).collect();
            assert_eq!(gunzip(&body).unwrap(), want.as_bytes(), "{order:?}");
        }
        assert!(parts[0].len() < a.len() / 20, "{} bytes", parts[0].len());
        assert_eq!(parts[0].text_len(), a.len() as u64);
    }

    #[test]
    fn a_wrong_crc_or_length_is_caught_by_a_decoder() {
        // The test above would pass with a decoder that ignored the trailer:
        // this one shows flate2's checks it.
        let mut body = gzip(b"hello").unwrap();
        let n = body.len();
        body[n - 8] ^= 1;
        assert!(gunzip(&body).is_err());
        let mut body = gzip(b"hello").unwrap();
        body[n - 1] ^= 1;
        assert!(gunzip(&body).is_err());
    }

    #[test]
    fn the_system_gzip_reads_it() {
        // Another implementation than the one that wrote it.
        let text = "a\n".repeat(70_000) + "b";
        let body = member([
            &Deflated::of(text.as_bytes()).unwrap(),
            &Deflated::of(b"tail\n").unwrap(),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("body.gz");
        std::fs::write(&path, &body).unwrap();
        let out = std::process::Command::new("gzip")
            .args(["-dc", "--"])
            .arg(&path)
            .output()
            .expect("gzip(1) runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, (text + "tail\n").as_bytes());
    }

    #[test]
    fn one_deflater_makes_of_each_part_what_a_fresh_compressor_does() {
        let texts: [&[u8]; 4] = [
            b"# HELP a A.\na 1\n",
            b"",
            b"a 1\na 1\na 1\n# HELP a A.\n",
            b"node 2\n",
        ];
        let mut deflater = Deflater::default();
        for text in texts {
            let reused = deflater.deflate(text).unwrap();
            let fresh = Deflated::of(text).unwrap();
            assert_eq!(reused.data, fresh.data, "no part refers to the last");
            assert_eq!(reused.text_len(), fresh.text_len());
            assert_eq!(gunzip(&member([&reused])).unwrap(), text);
        }
    }

    proptest! {
        #[test]
        fn any_parts_round_trip(texts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3_000), 0..6)) {
            let parts: Vec<Deflated> = texts.iter().map(|t| Deflated::of(t).unwrap()).collect();
            let body = member(parts.iter());
            prop_assert_eq!(gunzip(&body).unwrap(), texts.concat());
        }
    }
}
