//! What the redirect benchmarks request: a browser's headers and codes by
//! Zipf rank.

use std::net::SocketAddr;
use std::path::Path;

use tinyurl_harness::services::metric;

/// A wrk script that requests codes by Zipf(s = 1.0) rank. Ranks map to codes
/// in creation order, which the keyed permutation makes unrelated to the
/// codes' spelling.
pub fn zipf_lua(codes_file: &Path) -> String {
    format!(
        r#"local codes = {{}}
for line in io.lines("{file}") do codes[#codes + 1] = "/" .. line end
local n = #codes
local cdf = {{}}
local total = 0
for k = 1, n do total = total + 1 / k; cdf[k] = total end
for k = 1, n do cdf[k] = cdf[k] / total end
math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16))
request = function()
  local u = math.random()
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return wrk.format("GET", codes[lo])
end
"#,
        file = codes_file.display()
    )
}

/// What a browser following a link sends (nginx gets the same).
pub const CLICK_HEADERS: [&str; 2] = [
    "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Referer: https://news.example.com/item?id=1",
];

/// (L1 hits, L1 misses) of a redirect process.
pub async fn l1_counts(admin: SocketAddr) -> anyhow::Result<(f64, f64)> {
    Ok((
        metric(
            admin,
            "redirect_tier_lookups_total",
            &["tier=\"l1\"", "outcome=\"hit\""],
        )
        .await?,
        metric(
            admin,
            "redirect_tier_lookups_total",
            &["tier=\"l1\"", "outcome=\"miss\""],
        )
        .await?,
    ))
}
