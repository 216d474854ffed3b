//! gzip (flate2) against zstd for cache archives: ratio, compression and decompression speed
//! on one core, over a tar of real binaries and text. `cargo bench --bench compression`.
//! The corpus is `$FORGE_BENCH_CORPUS` (a directory), else /usr/lib/x86_64-linux-gnu and
//! /usr/bin; the first 256 MiB of regular files are used. Prints a Markdown table.

use std::io::{Read, Write};
use std::time::Instant;

const LIMIT: u64 = 256 << 20;
const RUNS: usize = 3;

fn corpus() -> Vec<u8> {
    let dirs: Vec<String> = match std::env::var("FORGE_BENCH_CORPUS") {
        Ok(d) => vec![d],
        Err(_) => vec!["/usr/lib/x86_64-linux-gnu".into(), "/usr/bin".into()],
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut total = 0;
    for dir in dirs {
        let walk = walkdir::WalkDir::new(&dir).sort_by_file_name();
        for entry in walk.into_iter().filter_map(Result::ok) {
            if !entry.file_type().is_file() || total >= LIMIT {
                continue;
            }
            let Ok(mut f) = std::fs::File::open(entry.path()) else { continue };
            let mut data = Vec::new();
            if f.read_to_end(&mut data).is_err() {
                continue;
            }
            total += data.len() as u64;
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o444);
            h.set_cksum();
            let name = entry.path().strip_prefix("/").unwrap_or(entry.path());
            let _ = tar.append_data(&mut h, name, &data[..]);
        }
    }
    tar.into_inner().expect("tar")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

fn main() {
    let data = corpus();
    let mb = data.len() as f64 / 1e6;
    println!("corpus: {:.0} MB tar of real files, medians of {RUNS} runs, one thread\n", mb);
    println!("| codec | ratio | compress MB/s | decompress MB/s |");
    println!("|---|---|---|---|");
    type Codec = (&'static str, Box<dyn Fn(&[u8]) -> Vec<u8>>, Box<dyn Fn(&[u8]) -> Vec<u8>>);
    let gz = |level: u32| -> Codec {
        (
            if level == 1 { "gzip -1 (flate2)" } else { "gzip -6 (flate2)" },
            Box::new(move |d: &[u8]| {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                e.write_all(d).expect("gzip");
                e.finish().expect("gzip")
            }),
            Box::new(|c: &[u8]| {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(c).read_to_end(&mut out).expect("gunzip");
                out
            }),
        )
    };
    let zs = |level: i32, name: &'static str| -> Codec {
        (
            name,
            Box::new(move |d: &[u8]| zstd::encode_all(d, level).expect("zstd")),
            Box::new(|c: &[u8]| zstd::decode_all(c).expect("unzstd")),
        )
    };
    let codecs = vec![gz(1), gz(6), zs(1, "zstd -1"), zs(3, "zstd -3 (chosen)"), zs(9, "zstd -9"), zs(19, "zstd -19")];
    for (name, compress, decompress) in codecs {
        let (mut ct, mut dt) = (Vec::new(), Vec::new());
        let mut size = 0;
        let runs = if name.contains("19") { 1 } else { RUNS };
        for _ in 0..runs {
            let t = Instant::now();
            let c = compress(&data);
            ct.push(mb / t.elapsed().as_secs_f64());
            size = c.len();
            let t = Instant::now();
            let d = decompress(&c);
            dt.push(mb / t.elapsed().as_secs_f64());
            assert_eq!(d.len(), data.len());
        }
        println!("| {name} | {:.2} | {:.0} | {:.0} |", data.len() as f64 / size as f64, median(ct), median(dt));
    }
}
