//! Resident memory of a receiver-side catalogue: builds N synthetic tags (as the e2e bench's
//! scale run does), sends them through `chunks` and the assembler as the link would, and
//! prints the process's resident set at each stage.
//!
//! `cargo run --release -p protocol --example catalogue_memory [-- 1000000]`

use protocol::catalogue::{Catalogue, CatalogueAssembler};
use protocol::codec;
use protocol::message::Message;
use protocol::model::{SourceAddress, TagInfo, ValueType};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn trim() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim only returns free heap pages to the kernel.
    unsafe { malloc_trim(0) };
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let base = rss_kib();
    // As the link delivers them: each chunk as its encoded message, decoded one at a time, so
    // what stays resident after assembly is what a receiver keeps.
    let chunks: Vec<Vec<u8>> = {
        let tags: Vec<TagInfo> = (0..n)
            .map(|i| TagInfo {
                name: format!("bench/area{}/line{}/tag{i}", i / 10_000, (i / 100) % 100),
                value_type: ValueType::Double,
                unit: "m3/h".into(),
                description: String::new(),
                source: SourceAddress::Other(format!("synthetic:{i}")),
            })
            .collect();
        Catalogue::new(tags)
            .chunks(1400)
            .into_iter()
            .filter_map(|c| codec::encode(&Message::Catalogue(c)).ok())
            .collect()
    };
    // The transmitter's side of the run is gone; only the encoded chunks remain.
    trim();
    let with_chunks = rss_kib();
    let mut assembler = CatalogueAssembler::new();
    let mut done = None;
    for bytes in &chunks {
        let Ok(Message::Catalogue(chunk)) = codec::decode::<Message>(bytes) else {
            continue;
        };
        if let Ok(Some(c)) = assembler.add(chunk) {
            done = Some(c);
        }
    }
    let Some(catalogue) = done else {
        eprintln!("catalogue did not assemble");
        std::process::exit(1);
    };
    let assembled = rss_kib();
    drop(assembler);
    drop(chunks);
    trim();
    let trimmed = rss_kib();
    println!(
        "{n} tags: encoded chunks {:.0} B/tag; after assembly (chunks still held) {:.0} B/tag; after dropping them and malloc_trim {:.0} B/tag; \
         size_of::<TagInfo>() = {} B; {} tags in the catalogue, {:.0} B/tag of heap by its own count",
        (with_chunks - base) as f64 * 1024.0 / n as f64,
        (assembled - base) as f64 * 1024.0 / n as f64,
        (trimmed - base) as f64 * 1024.0 / n as f64,
        std::mem::size_of::<TagInfo>(),
        catalogue.len(),
        catalogue.heap_bytes() as f64 / n as f64,
    );
}
