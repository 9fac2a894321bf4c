//! A tiny IP-to-country database in the MaxMind DB format, written for tests:
//! IPv4 networks mapped to `{"country": {"iso_code": …}}`, the shape of
//! GeoLite2-Country. Only what the format needs for that: a search tree
//! with 32-bit records, strings, maps, arrays and unsigned integers.

use std::net::Ipv4Addr;
use std::path::Path;

const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

#[derive(Clone, Copy)]
enum Record {
    Empty,
    Node(u32),
    /// Offset into the data section.
    Data(u32),
}

/// Writes a database mapping each `(network, prefix length)` to a country.
pub fn write_country_db(path: &Path, networks: &[(Ipv4Addr, u8, &str)]) -> anyhow::Result<()> {
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
    let mut data = Vec::new();
    for (network, prefix, country) in networks {
        anyhow::ensure!(
            (1..=32).contains(prefix),
            "prefix length {prefix} out of range"
        );
        let offset = u32::try_from(data.len())?;
        encode_map(&mut data, 1);
        encode_string(&mut data, "country");
        encode_map(&mut data, 1);
        encode_string(&mut data, "iso_code");
        encode_string(&mut data, country);
        let bits = u32::from(*network);
        let mut node = 0usize;
        for depth in 0..*prefix {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == *prefix {
                nodes[node][bit] = Record::Data(offset);
                break;
            }
            node = match nodes[node][bit] {
                Record::Node(next) => next as usize,
                _ => {
                    nodes.push([Record::Empty; 2]);
                    let next = nodes.len() - 1;
                    nodes[node][bit] = Record::Node(u32::try_from(next)?);
                    next
                }
            };
        }
    }
    let node_count = u32::try_from(nodes.len())?;
    let mut file = Vec::new();
    for node in &nodes {
        for record in node {
            let value = match *record {
                Record::Empty => node_count,
                Record::Node(index) => index,
                Record::Data(offset) => node_count + 16 + offset,
            };
            file.extend_from_slice(&value.to_be_bytes());
        }
    }
    file.extend_from_slice(&[0; 16]);
    file.extend_from_slice(&data);
    file.extend_from_slice(METADATA_MARKER);
    encode_map(&mut file, 9);
    encode_string(&mut file, "node_count");
    encode_unsigned(&mut file, 6, u64::from(node_count));
    encode_string(&mut file, "record_size");
    encode_unsigned(&mut file, 5, 32);
    encode_string(&mut file, "ip_version");
    encode_unsigned(&mut file, 5, 4);
    encode_string(&mut file, "database_type");
    encode_string(&mut file, "tinyurl-test-country");
    encode_string(&mut file, "languages");
    file.extend_from_slice(&[0, 11 - 7]);
    encode_string(&mut file, "binary_format_major_version");
    encode_unsigned(&mut file, 5, 2);
    encode_string(&mut file, "binary_format_minor_version");
    encode_unsigned(&mut file, 5, 0);
    encode_string(&mut file, "build_epoch");
    encode_unsigned(&mut file, 9, 1_700_000_000);
    encode_string(&mut file, "description");
    encode_map(&mut file, 0);
    std::fs::write(path, file)?;
    Ok(())
}

fn encode_map(out: &mut Vec<u8>, pairs: u8) {
    out.push((7 << 5) | pairs);
}

fn encode_string(out: &mut Vec<u8>, text: &str) {
    // Every string here is shorter than 29 bytes: the size fits the control byte.
    out.push((2 << 5) | text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

/// `kind` 5 (uint16), 6 (uint32) or 9 (uint64, an extended type).
fn encode_unsigned(out: &mut Vec<u8>, kind: u8, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|byte| **byte == 0).count();
    let size = (8 - skip) as u8;
    if kind < 8 {
        out.push((kind << 5) | size);
    } else {
        out.push(size);
        out.push(kind - 7);
    }
    out.extend_from_slice(&bytes[skip..]);
}
